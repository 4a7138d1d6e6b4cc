"""Everything the check sends: metrics and events through the Agent, failures to Datadog's DORA API."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from .change_failures import ChangeFailures, Deployment, deployment_link
from .cursor import Resolution
from .datadog import DORA_PATH, DatadogApi, Write
from .incident import Incident

# `<metric_namespace>.` + these; `dora` by default, like Datadog's own DORA metrics.
TIME_TO_RESTORE = 'time_to_restore'
INCIDENTS_COUNT = 'incidents.count'
SOURCE_CAN_CONNECT = 'dora.check.source.can_connect'
CURSOR_LAG = 'dora.check.cursor.lag'
DORA_PENDING = 'dora.check.outbox.pending'
DORA_DROPPED = 'dora.check.outbox.dropped'
INCIDENTS_SKIPPED = 'dora.check.incidents.skipped'
CURSOR_SAVE_FAILED = 'dora.check.cursor.save_failed'

MAX_CUSTOM_TAGS = 100
# Datadog keeps no event dated more than 18 hours ago; a margin covers clock and flush delays.
EVENT_MAX_AGE = timedelta(hours=17)
_DORA_ID = re.compile(r'[A-Za-z0-9\-_.:]{16,128}')


def dora_tags(incident: Incident) -> list[str]:
    """The tag names Datadog's own DORA metrics use, each when known; `service` is per point."""
    pairs = [
        ('team', incident.team),
        ('env', incident.env),
        ('severity', incident.severity),
        ('source', incident.origin.source),
    ]
    return [f'{name}:{value}' for name, value in pairs if value]


def dora_id(incident: Incident) -> str:
    """Deterministic, so a re-send (reopened incident, retried post) updates instead of duplicating."""
    origin = incident.origin
    if _DORA_ID.fullmatch(origin.key):
        return origin.key
    return f'{origin.source}:sha256:{hashlib.sha256(origin.id.encode()).hexdigest()[:48]}'


def failure_payload(incident: Incident, tags: list[str], causing: Deployment | None = None) -> dict:
    """The DORA failure body; service(s), team, env and severity are attributes, `tags` go to custom_tags."""
    origin = incident.origin
    custom_tags = [f'source:{origin.source}', *tags]
    attributes = {
        'id': dora_id(incident),
        'name': origin.title,
        'started_at': _ns(origin.started_at),
        'finished_at': _ns(origin.restored_at),
        'custom_tags': [tag for tag in custom_tags if ':' in tag][:MAX_CUSTOM_TAGS],
    }
    optional = {'services': list(incident.services), 'team': incident.team, 'env': incident.env}
    optional['severity'] = incident.severity
    attributes.update({name: value for name, value in optional.items() if value})
    attributes.update(deployment_link(causing))  # the causing deployment's version and git, when known
    return {'data': {'attributes': attributes}}


class Outputs:
    """Turns one resolution into its metrics, event, DORA failure and deployment marking."""

    def __init__(
        self,
        check,
        dora: DatadogApi | None,
        send_metrics: bool = True,
        changes: ChangeFailures | None = None,
        send_failures: bool = True,
    ):
        self._check = check
        self._dora = dora
        self._changes = changes  # marks causing deployments (`mark_change_failures`)
        self._send_failures = send_failures  # False: `dora` is there for the markings only
        self._tags = list(check.config.tags or ())
        self._send_metrics = send_metrics
        self._send_events = send_metrics and check.config.send_events
        namespace = check.config.metric_namespace or 'dora'
        self._time_to_restore, self._incidents_count = (
            f'{namespace}.{TIME_TO_RESTORE}',
            f'{namespace}.{INCIDENTS_COUNT}',
        )

    def emit(self, incident: Incident, resolution: Resolution, now: datetime) -> None:
        tags = dora_tags(incident) + self._tags
        if self._send_metrics:
            # One point per service, so per-service views are right; a sum across services counts an
            # incident once per service it hit. The gauge carries `incident_id`: the Agent keeps only
            # the last gauge value per context per flush.
            for service_tags in _per_service(incident, tags):
                self._check.gauge(
                    self._time_to_restore, incident.time_to_restore, tags=service_tags + [_id_tag(incident)]
                )
                if resolution is Resolution.NEW:
                    self._check.count(self._incidents_count, 1, tags=service_tags)
        if self._send_events:
            self._check.event(_event(incident, resolution, tags, now))
        causing = self._changes.causing(incident) if self._changes is not None else None
        if self._dora is not None and self._send_failures:
            if incident.services or incident.team:
                self._dora.send(failure_write(failure_payload(incident, self._tags, causing)))
            else:  # Datadog refuses a failure without either (HTTP 400): say why instead of sending it
                self._check.warning(
                    'No DORA failure for incident %s: it names no service and no team; map its service in '
                    '`service_mapping` (or give it a team in the incident tool)',
                    incident.key,
                )
        if self._changes is not None:
            self._changes.mark(incident)  # after the failure: a marking that fails must not hold it back

    def begin(self, deadline: float) -> None:
        """Before a run reads anything: DORA failures queued earlier go out first."""
        if self._dora is not None:
            self._dora.begin(deadline)
        if self._changes is not None:
            self._changes.begin(deadline)

    def save(self) -> None:
        """Make what could not be sent durable; called before the cursor moves past it."""
        if self._dora is not None:
            self._dora.save()

    def finish(self, health: Health) -> None:
        """After a run: the check's own health, per source, so one failing instance is never hidden by another."""
        tags = [*self._tags, f'source:{self._check.config.source}']
        self._check.gauge(SOURCE_CAN_CONNECT, 1 if health.source_up else 0, tags=tags)
        if health.cursor_lag is not None:
            self._check.gauge(CURSOR_LAG, health.cursor_lag, tags=tags)
        self._check.gauge(CURSOR_SAVE_FAILED, 1 if health.cursor_save_failed else 0, tags=tags)
        self._check.count(INCIDENTS_SKIPPED, health.skipped, tags=tags)
        if self._dora is not None:
            self._dora.finish()
            self._check.gauge(DORA_PENDING, self._dora.pending, tags=tags)
            self._check.count(DORA_DROPPED, self._dora.take_dropped(), tags=tags)
        if self._changes is not None:
            self._changes.finish(self._check.count, tags)

    @property
    def dora(self) -> DatadogApi | None:
        return self._dora

    @property
    def pending(self) -> int:
        return self._dora.pending if self._dora is not None else 0

    @property
    def rejected(self) -> str | None:
        """Why Datadog refused this run's credentials, if it did."""
        return self._dora.rejected if self._dora is not None else None


@dataclass
class Health:
    source_up: bool = True
    cursor_lag: float | None = None
    cursor_save_failed: bool = False
    skipped: int = 0


def _per_service(incident: Incident, tags: list[str]) -> list[list[str]]:
    return [[f'service:{service}', *tags] for service in incident.services] or [tags]


def _id_tag(incident: Incident) -> str:
    return f'incident_id:{incident.origin.id}'


def _event(incident: Incident, resolution: Resolution, tags: list[str], now: datetime) -> dict:
    origin = incident.origin
    label = origin.number or origin.id
    link = f'[{label}]({origin.url})' if origin.url else label
    verb = {Resolution.AGAIN: 'resolved again', Resolution.CORRECTED: 'corrected'}.get(resolution, 'resolved')
    services = ', '.join(f'`{service}`' for service in incident.services) or '`unknown`'
    # Datadog drops events dated more than 18 hours ago without an error: an older resolution (first
    # run, backlog) is stamped now, and its text says when it happened.
    late = now - origin.resolved_at > EVENT_MAX_AGE
    when = f'Reported late: resolved {origin.resolved_at.isoformat()}.' if late else ''
    return {
        'timestamp': int((now if late else origin.resolved_at).timestamp()),
        'event_type': 'dora_incidents.resolved',
        'source_type_name': 'dora_incidents',
        'msg_title': f'Incident {label} {verb}: {origin.title}'[:100],
        'msg_text': (
            f'%%%\nIncident {link} **{origin.title}** on {services} was {verb} '
            f'after {_duration(incident.time_to_restore)}. {when}\n\n'
            f'Started {origin.started_at.isoformat()}, restored {origin.restored_at.isoformat()}, '
            f'resolved {origin.resolved_at.isoformat()}.\n%%%'
        ),
        'aggregation_key': f'dora_incidents:{origin.key}',
        'alert_type': 'success',
        'priority': 'normal',
        'tags': [f'service:{service}' for service in incident.services] + tags + [_id_tag(incident)],
    }


def failure_write(payload: dict) -> Write:
    failure_id = payload['data']['attributes']['id']
    return Write(failure_id, 'POST', DORA_PATH, payload, f'the DORA failure for incident {failure_id}')


def _ns(moment) -> int:
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1_000


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    parts = [f'{days}d' if days else '', f'{hours}h' if hours else '', f'{minutes}m' if minutes else '']
    return ' '.join(part for part in parts if part) or f'{secs}s'
