"""Everything the check sends: metrics and events through the Agent, failures to Datadog's DORA API."""

from __future__ import annotations

import hashlib
import math
import re
import time
from urllib.parse import urlsplit

import requests

from datadog_checks.base import ConfigurationError
from datadog_checks.base.agent import datadog_agent

from .cursor import Resolution
from .durable import DurableJson
from .incident import Incident

TIME_TO_RESTORE = 'dora.time_to_restore'
INCIDENTS_COUNT = 'dora.incidents.count'
SOURCE_CAN_CONNECT = 'dora.check.source.can_connect'
CURSOR_LAG = 'dora.check.cursor.lag'
DORA_PENDING = 'dora.check.outbox.pending'
DORA_DROPPED = 'dora.check.outbox.dropped'
INCIDENTS_SKIPPED = 'dora.check.incidents.skipped'

DORA_PATH = '/api/v2/dora/failure'
OUTBOX_KEY = 'dora_outbox'
MAX_OUTBOX = 1_000
MIN_BACKOFF = 30
MAX_BACKOFF = 3_600
MAX_CUSTOM_TAGS = 100
GOV_SITES = ('ddog-gov.com',)  # DORA Metrics does not exist there
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


def failure_payload(incident: Incident, tags: list[str]) -> dict:
    """The DORA failure body; service, team, env and severity are attributes, `tags` go to custom_tags."""
    custom_tags = [f'source:{incident.source}', *tags]
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
            self._dora.send(failure_payload(incident, self._tags))

    def begin(self, deadline: float) -> None:
        """Before a run reads anything: DORA failures queued earlier go out first."""
        if self._dora is not None:
            self._dora.begin(deadline)

    def save(self) -> None:
        """Make what could not be sent durable; called before the cursor moves past it."""
        if self._dora is not None:
            self._dora.save()

    def finish(self, source_up: bool, cursor_lag: float | None, skipped: int) -> None:
        """After a run: the check's own health."""
        self._check.gauge(SOURCE_CAN_CONNECT, 1 if source_up else 0, tags=self._tags)
        if cursor_lag is not None:
            self._check.gauge(CURSOR_LAG, cursor_lag, tags=self._tags)
        self._check.count(INCIDENTS_SKIPPED, skipped, tags=self._tags)
        if self._dora is not None:
            self._dora.finish()
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


def dora_api(check) -> DoraApi:
    """The DORA API client for a check's configuration: its URL and key, or the Agent's site and key."""
    url = check.config.datadog_api_url or f'https://api.{datadog_agent.get_config("site") or "datadoghq.com"}'
    host = urlsplit(url).hostname
    if host.endswith(GOV_SITES):
        raise ConfigurationError(
            f'`send_dora_failures`: DORA Metrics is not available on {host}; '
            'set `send_dora_failures: false` (metrics and events still work)'
        )
    api_key = check.config.datadog_api_key or datadog_agent.get_config('api_key')
    if not api_key:
        raise ConfigurationError('`datadog_api_key`: no Datadog API key for DORA failures; set it, or the Agent `api_key`')
    check.register_secret(api_key)
    return DoraApi(check, url, api_key)


class DoraApi:
    """POSTs DORA failures. What cannot be sent now waits in a bounded, durable outbox for later runs."""

    def __init__(self, check, base_url: str, api_key: str):
        self._check = check
        self._url = base_url + DORA_PATH
        self._headers = {'DD-API-KEY': api_key, 'Content-Type': 'application/json'}
        self._store = DurableJson(check, OUTBOX_KEY, _outbox_from_document, _outbox_to_document)
        self._outbox: dict[str, dict] = {}  # DORA id -> {payload, attempts, next_at}; oldest first
        self._dropped = 0
        self._deadline = math.inf
        # Once a post fails for a reason that will not pass within the run, the rest of the run queues
        # without trying: an unreachable Datadog must not cost a timeout per incident.
        self._held_back: str | None = None
        self._deferred_for_time = False

    @property
    def pending(self) -> int:
        return len(self._outbox)

    def take_dropped(self) -> int:
        dropped, self._dropped = self._dropped, 0
        return dropped

    def begin(self, deadline: float) -> None:
        """Start a run: reload the outbox and send what is due, before anything new."""
        self._deadline, self._held_back, self._deferred_for_time = deadline, None, False
        try:
            self._outbox = self._store.load() or {}
        except (RuntimeError, ValueError) as e:
            self._check.warning('The DORA outbox could not be read, starting it empty: %s', e)
            self._outbox = {}
        now = time.time()
        for item in [item for item in self._outbox.values() if item['next_at'] <= now]:
            self._deliver(item['payload'], item['attempts'], queued=True)

    def send(self, payload: dict) -> None:
        self._deliver(payload, attempts=0, queued=False)

    def save(self) -> None:
        self._store.save(self._outbox)

    def finish(self) -> None:
        self.save()
        if self._held_back and self._outbox:
            self._check.warning('%d DORA failures wait to be sent: %s', len(self._outbox), self._held_back)

    def _deliver(self, payload: dict, attempts: int, queued: bool) -> None:
        failure_id = payload['data']['attributes']['id']
        if not self._held_back and time.monotonic() > self._deadline:
            self._held_back = 'the run reached `max_run_time`; they go out first next run'
            self._deferred_for_time = True
        if self._held_back:
            if not queued:  # queued ones keep their place and their backoff
                self._enqueue(payload, attempts, backoff=0 if self._deferred_for_time else _backoff(1))
            return
        status, detail = self._post(payload)
        if status in (200, 202):
            self._outbox.pop(failure_id, None)
        elif status == 400:
            self._outbox.pop(failure_id, None)
            self._check.warning('Datadog rejected the DORA failure for incident %s, dropping it: %s', failure_id, detail)
        else:
            self._held_back = (
                f'Datadog refused the API key (check `datadog_api_key` or the Agent api_key): {detail}'
                if status == 403
                else f'the DORA API is unavailable ({detail}); retrying with backoff'
            )
            self._enqueue(payload, attempts + 1, backoff=_backoff(attempts + 1))

    def _post(self, payload: dict) -> tuple[int | None, str]:
        try:
            response = self._check.http.post(self._url, json=payload, extra_headers=self._headers)
        except requests.Timeout:
            return None, f'{self._url} did not answer in time'
        except requests.RequestException as e:
            return None, f'cannot reach {self._url}: {type(e).__name__}'
        return response.status_code, f'HTTP {response.status_code}: {response.text[:300]}'

    def _enqueue(self, payload: dict, attempts: int, backoff: float) -> None:
        failure_id = payload['data']['attributes']['id']
        self._outbox.pop(failure_id, None)  # a newer payload for the same incident replaces the older one
        self._outbox[failure_id] = {'payload': payload, 'attempts': attempts, 'next_at': time.time() + backoff}
        while len(self._outbox) > MAX_OUTBOX:
            oldest = next(iter(self._outbox))
            del self._outbox[oldest]
            self._dropped += 1
            self._check.warning('DORA outbox full (%d): dropped the failure for incident %s', MAX_OUTBOX, oldest)


def _backoff(attempts: int) -> float:
    return min(MAX_BACKOFF, MIN_BACKOFF * 2 ** max(0, attempts - 1))


def _outbox_to_document(outbox: dict) -> dict:
    return {'items': list(outbox.values())}


def _outbox_from_document(document: dict) -> dict:
    outbox = {}
    for item in document['items']:
        if not isinstance(item.get('attempts'), int) or not isinstance(item.get('next_at'), (int, float)):
            raise ValueError('an outbox item lacks `attempts` or `next_at`')
        outbox[item['payload']['data']['attributes']['id']] = item
    return outbox


def _ns(moment) -> int:
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1_000


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    parts = [f'{days}d' if days else '', f'{hours}h' if hours else '', f'{minutes}m' if minutes else '']
    return ' '.join(part for part in parts if part) or f'{secs}s'
