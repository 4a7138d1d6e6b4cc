"""What every incident source shares: HTTP with bounded retries, time parsing, Datadog naming."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import Any, Protocol

import requests

from ..incident import Batch

# A single run may wait this long at most for one rate-limit reset; a longer wait ends the run and the
# next run resumes where this one stopped.
MAX_RETRY_WAIT = 10.0
MAX_ATTEMPTS = 3
RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})


class SourceError(Exception):
    """The source could not be read. The message is shown to users: it names the cause, never a secret."""


class IncidentSource(Protocol):
    name: str

    def resolved(self, since: datetime, until: datetime, deadline: float) -> Iterator[Batch]:
        """Yield, oldest first, batches covering every resolution in [since, until)."""


class JsonApi:
    """GETs JSON through the check's `self.http`, honouring rate limits within the run's deadline."""

    def __init__(
        self,
        http,
        base_url: str,
        headers: Mapping[str, str],
        describe_error: Callable[[requests.Response], str],
    ):
        self._http = http
        self._base_url = base_url
        self._headers = dict(headers)
        self._describe_error = describe_error

    def get(self, path: str, params: list[tuple[str, Any]], deadline: float) -> dict:
        url = self._base_url + path
        for attempt in range(1, MAX_ATTEMPTS + 1):
            response = self._send(url, params)
            if response.status_code not in RETRIED_STATUSES:
                return self._decode(response, path)
            wait = _retry_after(response, attempt)
            if attempt == MAX_ATTEMPTS or wait > MAX_RETRY_WAIT or time.monotonic() + wait > deadline:
                break
            time.sleep(wait)
        raise SourceError(f'{self._describe_error(response)}; will retry next run')

    def _send(self, url: str, params) -> requests.Response:
        try:
            return self._http.get(url, params=params, extra_headers=self._headers)
        except requests.Timeout:
            raise SourceError(f'{self._base_url} did not answer in time (see the `timeout` option)') from None
        except requests.exceptions.ChunkedEncodingError:
            raise SourceError(f'the connection to {self._base_url} broke in the middle of an answer') from None
        except requests.RequestException as e:
            raise SourceError(f'cannot reach {self._base_url}: {type(e).__name__}') from None

    def _decode(self, response: requests.Response, path: str) -> dict:
        if response.status_code >= 400:
            raise SourceError(self._describe_error(response))
        try:
            body = response.json()
        except ValueError:
            raise SourceError(
                f'{self._base_url}{path} answered HTTP {response.status_code} with a body that is not JSON '
                f'(content-type {response.headers.get("content-type", "unknown")!r}): a proxy in between?'
            ) from None
        if not isinstance(body, dict):
            raise SourceError(f'{self._base_url}{path} answered with JSON that is not an object')
        return body


def _retry_after(response: requests.Response, attempt: int) -> float:
    """Seconds to wait: the rate-limit reset the server names, else exponential backoff."""
    for header in ('ratelimit-reset', 'retry-after'):
        value = response.headers.get(header)
        if value is not None:
            try:
                return max(0.0, float(value))
            except ValueError:
                pass
    return float(2 ** (attempt - 1))


def parse_time(value: Any, field: str) -> datetime:
    """An ISO 8601 timestamp with an explicit zone; anything else is malformed."""
    if not isinstance(value, str):
        raise ValueError(f'`{field}` is {value!r}, not a timestamp')
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f'`{field}` is not an ISO 8601 timestamp: {value[:64]!r}') from None
    if parsed.tzinfo is None:
        raise ValueError(f'`{field}` has no time zone: {value[:64]!r}')
    return parsed


_TAG_UNSAFE = re.compile(r'[^a-z0-9_.:/-]+')


def as_tag_value(name: str | None) -> str | None:
    """How Datadog would spell a free-text name as a tag value, so metrics and DORA events agree."""
    if not name:
        return None
    return _TAG_UNSAFE.sub('_', name.strip().lower()).strip('_') or None


class ServiceMapping:
    """Turns a source service (and its team) into Datadog's `service`, `team` and `env`."""

    def __init__(self, mapping: Mapping[str, Any] | None, default_env: str | None):
        self._mapping = mapping or {}
        self._default_env = default_env

    def resolve(self, service_id: str | None, service_name: str | None, team_name: str | None):
        target = self._mapping.get(service_id) or self._mapping.get(service_name) or {}
        service = target.get('service') or as_tag_value(service_name)
        team = target.get('team') or as_tag_value(team_name)
        env = target.get('env') or self._default_env
        return service, team, env
