"""Everything the check sends: metrics and events through the Agent, failures to Datadog's DORA API."""

from __future__ import annotations

import hashlib
import json
import re
import time

import requests

from .cursor import Resolution
from .incident import Incident

TIME_TO_RESTORE = 'dora.time_to_restore'
INCIDENTS_COUNT = 'dora.incidents.count'
SOURCE_CAN_CONNECT = 'dora_incidents.source.can_connect'
CURSOR_LAG = 'dora_incidents.cursor.lag'
DORA_PENDING = 'dora_incidents.dora.pending'
DORA_DROPPED = 'dora_incidents.dora.dropped'
INCIDENTS_SKIPPED = 'dora_incidents.incidents.skipped'

DORA_PATH = '/api/v2/dora/failure'
OUTBOX_KEY = 'dora_outbox'
MAX_OUTBOX = 1_000
MIN_BACKOFF = 30
MAX_BACKOFF = 3_600
MAX_CUSTOM_TAGS = 100
_DORA_ID = re.compile(r'[A-Za-z0-9\-_.:]{16,128}')


def dora_tags(incident: Incident) -> list[str]:
    """The tag names Datadog's own DORA metrics use, each when known."""
    pairs = [
        ('service', incident.service),
        ('team', incident.team),
        ('env', incident.env),
        ('severity', incident.severity),
        ('source', incident.source),
    ]
    return [f'{name}:{value}' for name, value in pairs if value]


def dora_id(incident: Incident) -> str:
    """Deterministic, so a re-send (reopened incident, retried post) updates instead of duplicating."""
    candidate = incident.key
    if _DORA_ID.fullmatch(candidate):
        return candidate
    return f'{incident.source}:sha256:{hashlib.sha256(incident.id.encode()).hexdigest()[:48]}'


def failure_payload(incident: Incident, custom_tags: list[str]) -> dict:
    attributes = {
        'id': dora_id(incident),
        'name': incident.title,
        'started_at': _ns(incident.started_at),
        'finished_at': _ns(incident.resolved_at),
        'custom_tags': [tag for tag in custom_tags if ':' in tag][:MAX_CUSTOM_TAGS],
    }
    optional = {'services': [incident.service] if incident.service else None}
    optional.update(team=incident.team, env=incident.env, severity=incident.severity)
    attributes.update({name: value for name, value in optional.items() if value})
    return {'data': {'attributes': attributes}}


class Outputs:
    """Turns one resolution into the metrics, event and DORA failure the issue names."""

    def __init__(self, check, dora: DoraApi | None):
        self._check = check
        self._dora = dora
        self._tags = list(check.config.tags or ())
        self._send_events = check.config.send_events

    def emit(self, incident: Incident, resolution: Resolution) -> None:
        tags = dora_tags(incident) + self._tags
        # One context per incident: the Agent keeps only the last gauge value per context per flush.
        self._check.gauge(TIME_TO_RESTORE, incident.time_to_restore, tags=tags + [f'incident_id:{incident.id}'])
        if resolution is Resolution.NEW:
            self._check.count(INCIDENTS_COUNT, 1, tags=tags)
        if self._send_events:
            self._check.event(_event(incident, resolution, tags))
        if self._dora is not None:
            # service, team, env and severity are first-class attributes there; custom tags carry the rest.
            self._dora.send(failure_payload(incident, [f'source:{incident.source}', *self._tags]))

    def health(self, source_up: bool, cursor_lag: float | None, skipped: int) -> None:
        self._check.gauge(SOURCE_CAN_CONNECT, 1 if source_up else 0, tags=self._tags)
        if cursor_lag is not None:
            self._check.gauge(CURSOR_LAG, cursor_lag, tags=self._tags)
        self._check.count(INCIDENTS_SKIPPED, skipped, tags=self._tags)
        if self._dora is not None:
            self._check.gauge(DORA_PENDING, self._dora.pending, tags=self._tags)
            self._check.count(DORA_DROPPED, self._dora.take_dropped(), tags=self._tags)


def _event(incident: Incident, resolution: Resolution, tags: list[str]) -> dict:
    label = f'#{incident.number}' if incident.number is not None else incident.id
    link = f'[{label}]({incident.url})' if incident.url else label
    verb = 'resolved again' if resolution is Resolution.AGAIN else 'resolved'
    return {
        'timestamp': int(incident.resolved_at.timestamp()),
        'event_type': 'dora_incidents.resolved',
        'source_type_name': 'dora_incidents',
        'msg_title': f'Incident {label} {verb}: {incident.title}'[:100],
        'msg_text': (
            f'%%%\nIncident {link} **{incident.title}** on service `{incident.service or "unknown"}` was {verb} '
            f'after {_duration(incident.time_to_restore)}.\n\n'
            f'Started {incident.started_at.isoformat()}, resolved {incident.resolved_at.isoformat()}.\n%%%'
        ),
        'aggregation_key': f'dora_incidents:{incident.key}',
        'alert_type': 'success',
        'priority': 'normal',
        'tags': tags + [f'incident_id:{incident.id}'],
    }


class DoraApi:
    """POSTs DORA failures. What cannot be sent now waits in a bounded outbox in the persistent cache."""

    def __init__(self, check, base_url: str, api_key: str):
        self._check = check
        self._url = base_url + DORA_PATH
        self._headers = {'DD-API-KEY': api_key, 'Content-Type': 'application/json'}
        self._outbox: dict[str, dict] = {}
        self._dropped = 0
        self._held_back = False  # after a transient failure, the rest of the run queues without trying

    @property
    def pending(self) -> int:
        return len(self._outbox)

    def take_dropped(self) -> int:
        dropped, self._dropped = self._dropped, 0
        return dropped

    def load(self) -> None:
        self._held_back = False
        try:
            stored = json.loads(self._check.read_persistent_cache(OUTBOX_KEY) or '{}')
            self._outbox = {item['payload']['data']['attributes']['id']: item for item in stored.get('items', [])}
        except (RuntimeError, ValueError, TypeError, KeyError, AttributeError) as e:
            self._check.warning('DORA outbox unreadable, starting empty: %s', type(e).__name__)
            self._outbox = {}

    def save(self) -> None:
        self._check.write_persistent_cache(OUTBOX_KEY, json.dumps({'items': list(self._outbox.values())}))

    def retry_due(self) -> None:
        now = time.time()
        for item in [item for item in self._outbox.values() if item['next_at'] <= now]:
            self.send(item['payload'], attempts=item['attempts'])

    def send(self, payload: dict, attempts: int = 0) -> None:
        failure_id = payload['data']['attributes']['id']
        if self._held_back:
            if self._outbox.get(failure_id, {}).get('payload') is not payload:  # retried ones keep their place
                self._enqueue(payload, attempts)
            return
        status, detail = self._post(payload)
        if status in (200, 202):
            self._outbox.pop(failure_id, None)
        elif status == 400:
            self._outbox.pop(failure_id, None)
            self._check.warning('Datadog rejected the DORA failure for incident %s, dropping it: %s', failure_id, detail)
        else:
            self._held_back = True
            if status == 403:
                self._check.warning(
                    'Datadog refused the DORA failure API key (HTTP 403): check `datadog_api_key` or the Agent '
                    "api_key; failures stay queued. %s",
                    detail,
                )
            else:
                self._check.log.info('DORA API unavailable (%s), queueing failures for a later run', detail)
            self._enqueue(payload, attempts + 1)

    def _post(self, payload: dict) -> tuple[int | None, str]:
        try:
            response = self._check.http.post(self._url, json=payload, extra_headers=self._headers)
        except requests.RequestException as e:
            return None, f'cannot reach {self._url}: {type(e).__name__}'
        return response.status_code, f'HTTP {response.status_code}: {response.text[:300]}'

    def _enqueue(self, payload: dict, attempts: int) -> None:
        failure_id = payload['data']['attributes']['id']
        self._outbox.pop(failure_id, None)
        backoff = min(MAX_BACKOFF, MIN_BACKOFF * 2 ** max(0, attempts - 1))
        self._outbox[failure_id] = {'payload': payload, 'attempts': attempts, 'next_at': time.time() + backoff}
        while len(self._outbox) > MAX_OUTBOX:
            oldest = next(iter(self._outbox))
            del self._outbox[oldest]
            self._dropped += 1
            self._check.warning('DORA outbox full (%d): dropped the failure for incident %s', MAX_OUTBOX, oldest)


def _ns(moment) -> int:
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1_000


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    parts = [f'{days}d' if days else '', f'{hours}h' if hours else '', f'{minutes}m' if minutes else '']
    return ' '.join(part for part in parts if part) or f'{secs}s'
