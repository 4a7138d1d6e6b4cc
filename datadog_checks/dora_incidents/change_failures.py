"""Change failures: the deployment behind each resolved incident, marked in Datadog's DORA Metrics.

Since 2026 Datadog computes change failure rate and failed-deployment recovery time from deployments
marked as change failures; the failure events the check sends are context beside them. For each service
of an incident, the causing deployment is the latest one of that service (and env) that finished within
`change_failure_window` before the incident started. Its remediation is the first later deployment of
the same service and env that finished between the incident's start and its resolution: a rollback when
it redeploys a version (or commit) that ran before the failed one, else a rollforward.

Marking happens where an incident is emitted, and the cursor emits each resolution once, so a deployment
is marked once per resolution; the PATCH is an idempotent write in the durable outbox, like a failure.
Deployments are listed once per (service, env) per run, and again only for an older stretch an incident
needs; nothing here is one query per incident.

Also `recover_reported`: the DORA failures already sent, for a run that starts without a cursor.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from urllib.parse import quote

from datadog_checks.base import ConfigurationError
from datadog_checks.base.agent import datadog_agent

from .datadog_api import DatadogApi, DatadogError, Write
from .incident import Incident

DEPLOYMENTS_PATH = '/api/v2/dora/deployments'
FAILURES_PATH = '/api/v2/dora/failures'
LIST_LIMIT = 1_000  # the most one list answer holds
MAX_PAGES = 20
# The list endpoints filter on an event's time, which may be its start: a deployment that started up
# to this long before the window and finished inside it is still found.
DEPLOY_DURATION = timedelta(hours=6)
# How far back a remediation's version is looked for among earlier deployments before calling it a
# rollforward: what it rolls back to may have run long before the window.
ROLLBACK_HISTORY = timedelta(days=30)
# A failure is listed by its start; one resolved in the recovered window may have started this long
# before it (as long as the cursor remembers an incident).
INCIDENT_DURATION = timedelta(days=30)

MARKED = 'dora.check.change_failures.marked'
UNMATCHED = 'dora.check.change_failures.unmatched'
LOOKUP_FAILED = 'dora.check.change_failures.lookup_failed'

_COMMIT = re.compile(r'[a-fA-F0-9]{40,}')
_BARE_VALUE = re.compile(r'[A-Za-z0-9_.]+')


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

    @classmethod
    def from_listed(cls, item) -> Deployment | None:
        """None for an entry that cannot be used: no id or service, not finished, unreadable times."""
        attributes = item.get('attributes') if isinstance(item, dict) else None
        if not isinstance(attributes, dict) or not _text(item.get('id')) or not _text(attributes.get('service')):
            return None
        started, finished = _time(attributes.get('started_at')), _time(attributes.get('finished_at'))
        if started is None or finished is None:
            return None
        git = attributes.get('git') if isinstance(attributes.get('git'), dict) else {}
        return cls(
            item['id'],
            attributes['service'],
            _text(attributes.get('env')),
            _text(attributes.get('version')),
            _text(git.get('commit_sha')),
            _text(git.get('repository_url')) or _text(git.get('repository_id')),
            started,
            finished,
        )


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
    return Write(
        f'deployment:{failed.id}', 'PATCH', f'{DEPLOYMENTS_PATH}/{quote(failed.id, safe="")}', body, label, app_key=True
    )


# -- marking ------------------------------------------------------------------------------------------
@dataclass
class _Known:
    """The deployments of one (service, env) listed this run, and the stretch [since, until] they cover."""

    since: datetime
    until: datetime
    deployments: dict[str, Deployment]


class ChangeFailures:
    """Marks the causing deployment of each emitted incident; counts what it marked and could not match."""

    def __init__(self, api: DatadogApi, window: timedelta, warn: Callable, clock: Callable[[], datetime] | None = None):
        self._api = api
        self._window = window
        self._warn = warn
        self._clock = clock or (lambda: datetime.now(timezone.utc))
        self.begin()

    def begin(self) -> None:
        """Start a run: deployments are listed afresh (some may have been sent to Datadog since)."""
        self._known: dict[tuple[str, str | None], _Known] = {}
        self._planned: dict[str, tuple[Deployment | None, list[Write]]] = {}  # incident key -> cause, markings
        self._marked_this_run: dict[str, bool] = {}  # deployment id -> marked with a remediation
        self._lookup_error: str | None = None
        self._counts = {MARKED: 0, UNMATCHED: 0, LOOKUP_FAILED: 0}

    def causing(self, incident: Incident) -> Deployment | None:
        """The latest of the incident's causing deployments (one per service), for the failure event's
        version and git; None when no service has one. Finds the markings that `mark` then sends."""
        if incident.key not in self._planned:
            planned = [self._plan_service(incident, service) for service in incident.services]
            causes = [cause for cause, _ in planned if cause]
            self._planned[incident.key] = (max(causes, key=_order, default=None), [w for _, w in planned if w])
        return self._planned[incident.key][0]

    def mark(self, incident: Incident) -> None:
        """Send (or queue in the outbox) the markings of the incident's causing deployments. Called after its
        failure event is sent: a marking that fails must not hold the failure back."""
        self.causing(incident)
        for write in self._planned.pop(incident.key)[1]:
            self._api.send(write)
            self._counts[MARKED] += 1

    def finish(self, count: Callable, tags: list[str]) -> None:
        """After a run: the health counts, and one warning when deployments could not be listed."""
        for name, value in self._counts.items():
            count(name, value, tags=tags)
        if self._lookup_error:
            self._warn(
                'Could not look up the deployments behind %d incident service(s), which are not marked as change '
                'failures: %s',
                self._counts[LOOKUP_FAILED],
                self._lookup_error,
            )
        self._counts = dict.fromkeys(self._counts, 0)

    def _plan_service(self, incident: Incident, service: str) -> tuple[Deployment | None, Write | None]:
        """The service's causing deployment and the write that marks it (None: marked already this run)."""
        origin = incident.origin
        if self._lookup_error:  # one failed list per run: Datadog down must not cost a timeout per incident
            self._counts[LOOKUP_FAILED] += 1
            return None, None
        try:
            known = self._deployments(
                service, incident.env, origin.started_at - self._window - DEPLOY_DURATION, origin.resolved_at
            )
        except DatadogError as e:
            self._lookup_error = str(e)
            self._counts[LOOKUP_FAILED] += 1
            return None, None
        failed = causing_deployment(known, service, incident.env, origin.started_at, self._window)
        if failed is None:
            self._counts[UNMATCHED] += 1
            return None, None
        fix = first_remediation(known, failed, origin.started_at, origin.resolved_at)
        kind = self._remediation_type(known, failed, fix, incident) if fix else None
        # Two incidents of one run caused by the same deployment: one marking, the one that names a remediation.
        if failed.id in self._marked_this_run and (self._marked_this_run[failed.id] or fix is None):
            return failed, None
        self._marked_this_run[failed.id] = fix is not None
        return failed, patch_write(failed, fix, kind, incident.key)

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
        items, complete = list_events(
            self._api,
            DEPLOYMENTS_PATH,
            'dora_deployments_list_request',
            search_query(service=service, env=env),
            since,
            until,
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


def change_failures(check, api: DatadogApi | None) -> ChangeFailures | None:
    """The marker for a check's configuration, None when `mark_change_failures` is off. Raises ConfigurationError."""
    config = check.config
    if not config.mark_change_failures or api is None:
        return None
    if not datadog_app_key(check):
        raise ConfigurationError(
            '`datadog_app_key`: `mark_change_failures` lists and marks deployments in Datadog, which needs an '
            'application key; set it, or the Agent `app_key`'
        )
    return ChangeFailures(api, timedelta(seconds=config.change_failure_window or 86400), check.warning)


def datadog_app_key(check) -> str | None:
    return check.config.datadog_app_key or datadog_agent.get_config('app_key') or None


# -- lost cursor ------------------------------------------------------------------------------------
def recover_reported(api: DatadogApi, source: str, env: str | None, since: datetime, until: datetime) -> dict[str, int]:
    """The DORA failures this instance already sent for resolutions in [since, until]: DORA failure id ->
    `finished_at` in epoch ms.

    For a run that starts without a cursor (first run, a cluster check re-dispatched to another node):
    what is listed here was reported before, so it is not counted again. Failures are found by the
    `source:` tag the check puts in `custom_tags`, and by env when given (None: every env). Note that
    `finished_at` is the incident's restore time, and the id is `outputs.dora_id(incident)`, which is the
    incident key unless that key had to be hashed. Raises DatadogError.
    """
    query = search_query(source=source, env=env)
    items, _ = list_events(api, FAILURES_PATH, 'dora_failures_list_request', query, since - INCIDENT_DURATION, until)
    reported = {}
    for item in items:
        attributes = item.get('attributes') if isinstance(item.get('attributes'), dict) else {}
        finished = _time(attributes.get('finished_at'))
        tags = attributes.get('custom_tags')
        if finished is None or (isinstance(tags, list) and f'source:{source}' not in tags):
            continue
        if env and attributes.get('env') not in (None, env):
            continue
        reported[str(item['id'])] = int(finished.timestamp() * 1000)
    return reported


# -- listing ----------------------------------------------------------------------------------------
def list_events(
    api: DatadogApi, path: str, kind: str, query: str, since: datetime, until: datetime
) -> tuple[list[dict], bool]:
    """The events matching `query` in [since, until], newest first, and whether that is all of them.

    The list endpoints page by time only: each next page ends where the previous one's oldest event
    started (that event comes again and is dropped by id). Raises DatadogError.
    """
    events: dict[str, dict] = {}
    to = until
    for _ in range(MAX_PAGES):
        body = {
            'data': {
                'type': kind,
                'attributes': {
                    'from': _iso(since),
                    'to': _iso(to),
                    'query': query,
                    'sort': '-started_at',
                    'limit': LIST_LIMIT,
                },
            }
        }
        page = api.query(path, body).get('data') or []
        if not isinstance(page, list):
            raise DatadogError(f'{path} did not answer a list')
        fresh = [item for item in page if _listed(item) and item['id'] not in events]
        events.update((item['id'], item) for item in fresh)
        if len(page) < LIST_LIMIT:
            return list(events.values()), True
        oldest = min((_time(item['attributes'].get('started_at')) for item in fresh), default=None, key=_sortable)
        if not fresh or oldest is None or oldest >= to:  # a full page at one instant: no way further back
            return list(events.values()), False
        to = oldest
    return list(events.values()), False


def search_query(**terms: str | None) -> str:
    """`service:checkout env:prod`; a value with other characters than letters, digits, `_` and `.` is quoted."""
    return ' '.join(f'{name}:{_search_value(value)}' for name, value in terms.items() if value)


def _search_value(value: str) -> str:
    if _BARE_VALUE.fullmatch(value):
        return value
    return '"' + value.replace('\\', '\\\\').replace('"', '\\"') + '"'


def _same_target(deployment: Deployment, failed: Deployment) -> bool:
    return (deployment.service, deployment.env) == (failed.service, failed.env)


def _order(deployment: Deployment):
    return deployment.finished_at, deployment.started_at, deployment.id


def _sortable(moment: datetime | None):
    return moment or datetime.max.replace(tzinfo=timezone.utc)


def _repository_url(repository: str | None) -> str | None:
    if not repository:
        return None
    if '://' in repository or repository.startswith('git@'):
        return repository
    return f'https://{repository}'  # `repository_id`: github.com/org/repo


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime('%Y-%m-%dT%H:%M:%S.%f')[:-3] + 'Z'


def _listed(item) -> bool:
    """An entry of a list answer with a string id and an attributes object; others are ignored."""
    return isinstance(item, dict) and _text(item.get('id')) is not None and isinstance(item.get('attributes'), dict)


def _text(value) -> str | None:
    """A non-empty string; anything else (a number where Datadog promises text) counts as absent."""
    return value if isinstance(value, str) and value else None


def _time(value) -> datetime | None:
    """A date-time as the list endpoints answer it (ISO 8601, `Z` or an offset); None when unreadable."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
