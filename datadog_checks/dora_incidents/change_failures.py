"""Change failures: the deployment behind each resolved incident, marked in Datadog's DORA Metrics.

Since 2026 Datadog computes change failure rate and failed-deployment recovery time from deployments
marked as change failures; the failure events the check sends are context beside them. For each service
of an incident, the causing deployment is the one the incident tool names (`change_attribution: evidence`,
the default: a deployment of that service and env with the commit SHA, version or change tag of a change
the tool relates as the cause; evidence.py), else, when the tool names no change, the latest one of that
service (and env) that finished within `change_failure_window` before the incident started (the window).
Evidence naming only changes Datadog does not know for the service marks nothing: never the window's guess
instead. Its remediation is the deployment the tool relates as the fix (FireHydrant), else the first later
deployment of the same service and env that finished between the incident's start and its resolution: a
rollback when it redeploys a version (or commit) that ran before the failed one, else a rollforward.

Datadog marks deployments too (rollbacks it detects, rollforward rules, people in the UI): a deployment
already `change_failure: true` is never marked again, whatever its remediation, only counted.

Marking happens where an incident is emitted, and the cursor emits each resolution once, so a deployment
is marked once per resolution; the PATCH is an idempotent write in the durable outbox, like a failure.
Each marking also gives the DORA numbers Datadog does not graph, as metrics, once: the change failure, its
recovery time and the rework deployment. Deployments are listed once per (service, env) per run, and again
only for an older stretch an incident needs; nothing here is one query per incident.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from urllib.parse import quote

from datadog_checks.base import ConfigurationError

from .datadog import DatadogApi, DatadogError, Write, keys
from .datadog.reads import LIST_LIMIT, datadog_time, search_query
from .evidence import EVIDENCE, WINDOW, Change, Evidence, attribution
from .incident import Incident, SourceIncident, text
from .sources.http import OutOfTime, SourceError

DEPLOYMENTS_PATH = '/api/v2/dora/deployments'
# The list endpoints filter on an event's time, which may be its start: a deployment that started up
# to this long before the window and finished inside it is still found.
DEPLOY_DURATION = timedelta(hours=6)
# How far back a remediation's version is looked for among earlier deployments before calling it a
# rollforward: what it rolls back to may have run long before the window.
ROLLBACK_HISTORY = timedelta(days=30)
# How far back before the incident's start a deployment the tool names is looked for, when it is not among
# those of the window: a change can fail long after it shipped.
EVIDENCE_HISTORY = timedelta(days=30)
# Why an incident's service got no marking (`reason:` of UNMATCHED).
NO_DEPLOYMENT = 'no_deployment'  # the window found no deployment
EVIDENCE_NOT_FOUND = 'evidence_not_found'  # the tool named changes Datadog does not know for the service

MARKED = 'dora.check.change_failures.marked'
UNMATCHED = 'dora.check.change_failures.unmatched'
LOOKUP_FAILED = 'dora.check.change_failures.lookup_failed'
ALREADY_MARKED = 'dora.check.change_failures.already_marked'
# `<metric_namespace>.` + these: the DORA numbers Datadog does not graph, once per marking.
CHANGE_FAILURES_COUNT = 'change_failures.count'
RECOVERY_TIME = 'failed_deployment_recovery_time'
REWORK_COUNT = 'deployments.rework'

_COMMIT = re.compile(r'[a-fA-F0-9]{40,}')


@dataclass(frozen=True)
class Deployment:
    """A DORA deployment event as the list endpoint answers it."""

    id: str
    service: str
    env: str | None
    version: str | None
    commit: str | None
    repository: str | None  # Datadog answers `repository_id`, the URL without its scheme
    started_at: datetime
    finished_at: datetime
    team: str | None = None
    change_failure: bool = False  # marked already (by Datadog's detection, a person, or this check)
    custom_tags: frozenset[str] = frozenset()  # lower case: change tags are compared ignoring case

    @classmethod
    def from_listed(cls, item) -> Deployment | None:
        """None for an entry that cannot be used: no id or service, not finished, unreadable times."""
        attributes = item.get('attributes') if isinstance(item, dict) else None
        if not isinstance(attributes, dict) or not text(item.get('id')) or not text(attributes.get('service')):
            return None
        started, finished = datadog_time(attributes.get('started_at')), datadog_time(attributes.get('finished_at'))
        if started is None or finished is None:
            return None
        git = attributes.get('git') if isinstance(attributes.get('git'), dict) else {}
        return cls(
            item['id'],
            attributes['service'],
            text(attributes.get('env')),
            text(attributes.get('version')),
            text(git.get('commit_sha')),
            text(git.get('repository_url')) or text(git.get('repository_id')),
            started,
            finished,
            text(attributes.get('team')),
            attributes.get('change_failure') is True,  # false, null or absent: not marked
            frozenset(tag.lower() for tag in attributes.get('custom_tags') or () if isinstance(tag, str)),
        )

    def tags(self) -> list[str]:
        pairs = (('service', self.service), ('env', self.env), ('team', self.team))
        return [f'{name}:{value}' for name, value in pairs if value]


# -- the choices, pure ------------------------------------------------------------------------------
def causing_deployment(
    deployments: Iterable[Deployment], service: str, env: str | None, started_at: datetime, window: timedelta
) -> Deployment | None:
    """The latest deployment of `service` (and `env`, when the incident has one) that finished within
    `window` before `started_at`. Without an env, deployments to several environments are ambiguous:
    none is chosen rather than, say, a staging one."""
    candidates = [
        d
        for d in deployments
        if d.service == service and (env is None or d.env == env) and started_at - window <= d.finished_at <= started_at
    ]
    if env is None and len({d.env for d in candidates}) > 1:
        return None
    return max(candidates, key=_order, default=None)


def first_remediation(
    deployments: Iterable[Deployment], failed: Deployment, started_at: datetime, resolved_at: datetime
) -> Deployment | None:
    """The first later deployment of the failed one's service and env that finished between the incident's
    start and its resolution."""
    candidates = [
        d
        for d in deployments
        if _same_target(d, failed)
        and d.id != failed.id
        and d.finished_at > failed.finished_at
        and started_at < d.finished_at <= resolved_at
    ]
    return min(candidates, key=_order, default=None)


def named_deployment(
    deployments: Iterable[Deployment],
    service: str,
    env: str | None,
    changes: Iterable[Change],
    started_at: datetime,
    resolved_at: datetime,
) -> Deployment | None:
    """The deployment of `service` (and `env`) that is one of `changes`: of those finished by the incident's
    resolution, the latest finished by its start (the one running when it started), else the first after.
    Without an env, matches in several environments are ambiguous: none is chosen."""
    changes = tuple(changes)
    candidates = [
        d
        for d in deployments
        if d.service == service
        and (env is None or d.env == env)
        and d.finished_at <= resolved_at
        and any(is_change(d, c) for c in changes)
    ]
    if env is None and len({d.env for d in candidates}) > 1:
        return None
    before = [d for d in candidates if d.finished_at <= started_at]
    return max(before, key=_order, default=None) or min(candidates, key=_order, default=None)


def named_remediation(deployments: Iterable[Deployment], failed: Deployment, fixes: Iterable[Change]):
    """The first deployment of the failed one's service and env, finished after it, that is one of `fixes`."""
    fixes = tuple(fixes)
    candidates = [
        d
        for d in deployments
        if _same_target(d, failed)
        and d.id != failed.id
        and d.finished_at > failed.finished_at
        and any(is_change(d, f) for f in fixes)
    ]
    return min(candidates, key=_order, default=None)


def is_change(deployment: Deployment, change: Change) -> bool:
    """Whether the deployment shipped `change`: its commit SHA (ignoring case), its version, or a custom tag."""
    return bool(
        (deployment.commit and deployment.commit.lower() in change.commits)
        or (deployment.version and deployment.version in change.versions)
        or (change.tags & deployment.custom_tags)
    )


def remediation_type(deployments: Iterable[Deployment], failed: Deployment, fix: Deployment) -> str:
    """`rollback` when `fix` redeploys a version (or commit) that ran before the failed deployment
    (V1 -> V2 failed -> V1, as Datadog's own detection reads it), else `rollforward`."""
    earlier = [d for d in deployments if _same_target(d, failed) and d.finished_at < failed.finished_at]
    # Redeploying the failed version itself is a retry, not a return to what ran before.
    version = fix.version if fix.version and fix.version != failed.version else None
    commit = fix.commit.lower() if fix.commit and fix.commit.lower() != (failed.commit or '').lower() else None
    for d in earlier:
        if (version and d.version == version) or (commit and (d.commit or '').lower() == commit):
            return 'rollback'
    return 'rollforward'


def deployment_link(deployment: Deployment | None) -> dict:
    """The DORA failure attributes that tie it to the deployment that caused it: its version, and git
    when complete (a full commit SHA and a repository URL)."""
    if deployment is None:
        return {}
    link = {'version': deployment.version} if deployment.version else {}
    repository = _repository_url(deployment.repository)
    if deployment.commit and _COMMIT.fullmatch(deployment.commit) and repository:
        link['git'] = {'commit_sha': deployment.commit, 'repository_url': repository}
    return link


def patch_write(failed: Deployment, fix: Deployment | None, kind: str | None, incident_key: str) -> Write:
    """The PATCH that marks `failed` as a change failure, remediated by `fix` when there is one."""
    attributes: dict = {'change_failure': True}
    if fix is not None:
        attributes['remediation'] = {'id': fix.id, 'type': kind}
    body = {'data': {'id': failed.id, 'type': 'dora_deployment_patch_request', 'attributes': attributes}}
    deployment = (
        f'{failed.id} ({failed.service} {failed.version})' if failed.version else f'{failed.id} ({failed.service})'
    )
    label = f'the change-failure marking of deployment {deployment} for incident {incident_key}'
    return Write(_key(failed), 'PATCH', f'{DEPLOYMENTS_PATH}/{quote(failed.id, safe="")}', body, label, app_key=True)


# -- marking ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Marking:
    write: Write
    failed: Deployment
    fix: Deployment | None
    kind: str | None
    first: bool  # the deployment's first marking this run (a later one only adds the remediation)
    team: str | None  # the incident's, for a deployment that names none
    attribution: str  # how it was found: EVIDENCE or WINDOW


@dataclass
class _Known:
    """The deployments of one (service, env) listed this run, and the stretch [since, until] they cover."""

    since: datetime
    until: datetime
    deployments: dict[str, Deployment]


EvidenceReader = Callable[[SourceIncident, float], Evidence | None]


class ChangeFailures:
    """Marks the causing deployment of each emitted incident; counts what it marked and could not match.

    `evidence` reads what the incident tool names as the cause (`Source.change_evidence`); None: the window
    only (`change_attribution: window`)."""

    def __init__(
        self,
        api: DatadogApi,
        window: timedelta,
        warn: Callable,
        clock: Callable[[], datetime] | None = None,
        numbers: DoraNumbers | None = None,
        evidence: EvidenceReader | None = None,
    ):
        self._api = api
        self._window = window
        self._warn = warn
        self._clock = clock or (lambda: datetime.now(timezone.utc))
        self._numbers = numbers
        self._read_evidence = evidence
        self.begin()

    def begin(self, deadline: float = math.inf) -> None:
        """Start a run: deployments are listed afresh (some may have been sent to Datadog since); evidence is
        read only until `deadline` (the run's budget)."""
        self._deadline = deadline
        self._known: dict[tuple[str, str | None], _Known] = {}
        self._planned: dict[str, tuple[Deployment | None, list[_Marking]]] = {}  # incident key -> cause, markings
        self._marked_this_run: dict[str, bool] = {}  # deployment id -> marked with a remediation
        self._sent: dict[str, _Marking] = {}  # deployment id -> its last marking this run, for the DORA numbers
        self._lookup_error: str | None = None
        self._evidence_error: str | None = None
        self._unread = 0  # incidents whose evidence could not be read: found by the window instead
        self._counts = {MARKED: 0, LOOKUP_FAILED: 0, ALREADY_MARKED: 0}
        self._unmatched = {NO_DEPLOYMENT: 0, EVIDENCE_NOT_FOUND: 0}

    def causing(self, incident: Incident) -> Deployment | None:
        """The latest of the incident's causing deployments (one per service), for the failure event's
        version and git; None when no service has one. Finds the markings that `mark` then sends."""
        if incident.key not in self._planned:
            evidence = self._evidence(incident)
            planned = [self._plan_service(incident, service, evidence) for service in incident.services]
            causes = [cause for cause, _, _ in planned if cause]
            # Evidence found in one service located the cause: the incident's other services are not counted
            # as unmatched (they were hit, not changed).
            for _, _, reason in planned if not (evidence and causes) else ():
                if reason:
                    self._unmatched[reason] += 1
            self._planned[incident.key] = (max(causes, key=_order, default=None), [w for _, w, _ in planned if w])
        return self._planned[incident.key][0]

    def _evidence(self, incident: Incident) -> Evidence | None:
        """What the tool names as the incident's cause; None (the window decides) when it names no change or
        the evidence could not be read (out of budget, the tool failing): one read per incident at most."""
        if self._read_evidence is None or not incident.services or self._lookup_error:
            return None
        try:
            return self._read_evidence(incident.origin, self._deadline)
        except (SourceError, OutOfTime) as e:
            self._unread += 1
            self._evidence_error = self._evidence_error or (str(e) or 'the run\'s `max_run_time` was spent')
            return None

    def mark(self, incident: Incident) -> None:
        """Send (or queue in the outbox) the markings of the incident's causing deployments. Called after its
        failure event is sent: a marking that fails must not hold the failure back."""
        self.causing(incident)
        for marking in self._planned.pop(incident.key)[1]:
            self._api.send(marking.write)
            self._counts[MARKED] += marking.first
            self._sent[marking.failed.id] = marking

    def finish(self, count: Callable, tags: list[str]) -> None:
        """After a run: the health counts, and one warning when deployments could not be listed."""
        for name, value in self._counts.items():
            count(name, value, tags=tags)
        for reason, value in self._unmatched.items():
            count(UNMATCHED, value, tags=[*tags, f'reason:{reason}'])
        # Once per marked deployment, as it was last marked this run (a later incident may have added a remediation).
        for marking in self._sent.values() if self._numbers is not None else ():
            self._numbers.marked(marking.failed, marking.kind, marking.team, marking.attribution)
            if marking.fix is not None:
                self._numbers.remediated(marking.failed, marking.fix, marking.kind, marking.team, marking.attribution)
        self._sent = {}
        if self._evidence_error:
            self._warn(
                'Could not read the changes the incident tool relates to %d incident(s), whose deployments were '
                'found by the time window instead: %s',
                self._unread,
                self._evidence_error,
            )
        if self._lookup_error:
            self._warn(
                'Could not look up the deployments behind %d incident service(s), which are not marked as change '
                'failures: %s',
                self._counts[LOOKUP_FAILED],
                self._lookup_error,
            )
        self._counts = dict.fromkeys(self._counts, 0)
        self._unmatched = dict.fromkeys(self._unmatched, 0)
        self._evidence_error, self._unread = None, 0

    def _plan_service(
        self, incident: Incident, service: str, evidence: Evidence | None
    ) -> tuple[Deployment | None, _Marking | None, str | None]:
        """The service's causing deployment, its marking (None: marked already, by Datadog or this run), and
        why there is none (a `reason:` of UNMATCHED)."""
        origin = incident.origin
        if self._lookup_error:  # one failed list per run: Datadog down must not cost a timeout per incident
            self._counts[LOOKUP_FAILED] += 1
            return None, None, None
        try:
            known = self._deployments(
                service, incident.env, origin.started_at - self._window - DEPLOY_DURATION, origin.resolved_at
            )
            if evidence is None:
                failed = causing_deployment(known, service, incident.env, origin.started_at, self._window)
            else:
                failed = self._named(known, service, incident, evidence)
        except DatadogError as e:
            self._lookup_error = str(e)
            self._counts[LOOKUP_FAILED] += 1
            return None, None, None
        if failed is None:
            return None, None, NO_DEPLOYMENT if evidence is None else EVIDENCE_NOT_FOUND
        if failed.id not in self._marked_this_run and (failed.change_failure or self._api.pool.waiting(_key(failed))):
            # Marked by Datadog's detection, a person or an earlier run (its PATCH may still wait in the outbox):
            # never overwritten, whatever its remediation.
            self._counts[ALREADY_MARKED] += 1
            return failed, None, None
        fix = named_remediation(known, failed, evidence.fixes) if evidence else None
        fix = fix or first_remediation(known, failed, origin.started_at, origin.resolved_at)
        kind = self._remediation_type(known, failed, fix, incident) if fix else None
        # Two incidents of one run caused by the same deployment: one marking, the one that names a remediation.
        first = failed.id not in self._marked_this_run
        if not first and (self._marked_this_run[failed.id] or fix is None):
            return failed, None, None
        self._marked_this_run[failed.id] = fix is not None
        write = patch_write(failed, fix, kind, incident.key)
        found_by = WINDOW if evidence is None else EVIDENCE
        return failed, _Marking(write, failed, fix, kind, first, incident.team, found_by), None

    def _named(self, known: list[Deployment], service: str, incident: Incident, evidence: Evidence):
        """The deployment the evidence names, among the window's deployments, else among those of the
        EVIDENCE_HISTORY before the incident (one more list per service and env a run, at most)."""
        origin = incident.origin
        found = named_deployment(known, service, incident.env, evidence.causes, origin.started_at, origin.resolved_at)
        if found is None:
            known = self._deployments(service, incident.env, origin.started_at - EVIDENCE_HISTORY, origin.resolved_at)
            found = named_deployment(
                known, service, incident.env, evidence.causes, origin.started_at, origin.resolved_at
            )
        return found

    def _remediation_type(
        self, known: list[Deployment], failed: Deployment, fix: Deployment, incident: Incident
    ) -> str:
        kind = remediation_type(known, failed, fix)
        if kind == 'rollback':
            return kind
        # What it may roll back to can have run long before the window: look further back first.
        try:
            history = self._deployments(
                failed.service, incident.env, failed.started_at - ROLLBACK_HISTORY, fix.finished_at
            )
        except DatadogError as e:
            self._warn(
                'Could not list earlier deployments of %s; %s is taken for a rollforward: %s', failed.service, fix.id, e
            )
            return kind
        return remediation_type(history, failed, fix)

    def _deployments(self, service: str, env: str | None, since: datetime, until: datetime) -> list[Deployment]:
        """The deployments of `service` (and `env`) over at least [since, until], listed at most once per stretch
        per run. A run's incidents start close together and resolve before now: each list reaches a window
        further back than asked and up to now, so that the run's other incidents need no list of their own."""
        key = (service, env)
        known = self._known.get(key)
        since = since - self._window if known is None or since < known.since else since
        if known is None:
            until = max(until, self._clock())
            known = _Known(since, until, self._list(service, env, since, until))
            self._known[key] = known
        if since < known.since:
            known.deployments.update(self._list(service, env, since, known.since))
            known.since = since
        if until > known.until:
            known.deployments.update(self._list(service, env, known.until, until))
            known.until = until
        return list(known.deployments.values())

    def _list(self, service: str, env: str | None, since: datetime, until: datetime) -> dict[str, Deployment]:
        query = search_query(service=service, env=env)
        items, complete = self._api.lists.list_events(
            DEPLOYMENTS_PATH, 'dora_deployments_list_request', query, since, until, limit=LIST_LIMIT
        )
        if not complete:
            self._warn(
                'More than %d deployments of %s between %s and %s: the oldest were not read',
                len(items),
                service,
                since,
                until,
            )
        deployments = (Deployment.from_listed(item) for item in items)
        # Search syntax may match loosely: other services and environments are never considered.
        return {d.id: d for d in deployments if d and d.service == service and (env is None or d.env == env)}


def change_failures(check, api: DatadogApi | None, source=None) -> ChangeFailures | None:
    """The marker for a check's configuration, None when `mark_change_failures` is off; it reads the evidence
    of `source` (a `Source`). Raises ConfigurationError."""
    config = check.config
    if 'change_attribution' in check.instance and not config.mark_change_failures:
        raise ConfigurationError(
            '`change_attribution` chooses how `mark_change_failures` finds the deployment behind an incident: '
            'set `mark_change_failures: true`, or remove it'
        )
    if not config.mark_change_failures or api is None:
        return None
    if not keys.app_key(check):
        raise ConfigurationError(
            '`datadog_app_key`: `mark_change_failures` lists and marks deployments in Datadog, which needs an '
            'application key; set it, or the Agent `app_key`'
        )
    return ChangeFailures(
        api,
        timedelta(seconds=config.change_failure_window or 86400),
        check.warning,
        numbers=DoraNumbers(check, config.metric_namespace or 'dora', list(config.tags or ())),
        evidence=source.change_evidence if source is not None and attribution(config) == EVIDENCE else None,
    )


class DoraNumbers:
    """The DORA numbers of each marking, as metrics: `<ns>.change_failures.count` per marked deployment,
    `<ns>.failed_deployment_recovery_time` (the failed deployment's finish to its remediation's, as Datadog
    computes it) and `<ns>.deployments.rework` per remediation deployment."""

    def __init__(self, check, namespace: str, tags: list[str]):
        self._check = check
        self._namespace = namespace
        self._tags = tags

    def marked(self, failed: Deployment, kind: str | None, team: str | None, found_by: str) -> None:
        tags = _with_team(failed, team) + [f'remediation_type:{kind or "none"}', f'attribution:{found_by}'] + self._tags
        self._check.count(f'{self._namespace}.{CHANGE_FAILURES_COUNT}', 1, tags=tags)

    def remediated(self, failed: Deployment, fix: Deployment, kind: str, team: str | None, found_by: str) -> None:
        tags = _with_team(failed, team) + [f'remediation_type:{kind}', f'attribution:{found_by}'] + self._tags
        recovery = (fix.finished_at - failed.finished_at).total_seconds()
        # `deployment_id`: the Agent keeps one gauge value per context per flush; two markings stay two points.
        self._check.gauge(f'{self._namespace}.{RECOVERY_TIME}', recovery, tags=tags + [f'deployment_id:{failed.id}'])
        rework = [tag for tag in fix.tags() if not tag.startswith('team:')] + [f'remediation_type:{kind}'] + self._tags
        self._check.count(f'{self._namespace}.{REWORK_COUNT}', 1, tags=rework)


def _with_team(deployment: Deployment, team: str | None) -> list[str]:
    """The deployment's tags; its team when it has one, else the incident's."""
    tags = deployment.tags()
    return tags if deployment.team or not team else [*tags, f'team:{team}']


def _key(deployment: Deployment) -> str:
    """The outbox key of a deployment's marking."""
    return f'deployment:{deployment.id}'


def _same_target(deployment: Deployment, failed: Deployment) -> bool:
    return (deployment.service, deployment.env) == (failed.service, failed.env)


def _order(deployment: Deployment):
    return deployment.finished_at, deployment.started_at, deployment.id


def _repository_url(repository: str | None) -> str | None:
    if not repository:
        return None
    if '://' in repository or repository.startswith('git@'):
        return repository
    return f'https://{repository}'  # `repository_id`: github.com/org/repo
