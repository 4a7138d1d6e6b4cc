"""JSON over the check's `self.http` for every source: bounded retries, rate limits, deadline, the source's clock."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import requests

# A single run may wait this long at most for one rate-limit reset; a longer wait ends the run and the
# next run resumes where this one stopped.
MAX_RETRY_WAIT = 10.0
MAX_ATTEMPTS = 3
RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})
# Rate-limit answers name the wait in one of these headers: seconds, or an epoch time (told apart by size).
RESET_HEADERS = ('retry-after', 'ratelimit-reset', 'x-ratelimit-reset', 'x-rate-limit-reset')
_EPOCH = 1_000_000_000


class SourceError(Exception):
    """The source could not be read. The message is shown to users: it names the cause, never a secret."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status  # the HTTP status of the answer that was refused, when there was one


class CredentialsRejected(SourceError):
    """The source refused the credential (401/403): a configuration problem, not a passing fault."""


class OutOfTime(Exception):
    """The run's budget (`max_run_time`) is spent: no request was started. Not an error: the next run goes on."""


@dataclass(frozen=True)
class Answer:
    """A decoded answer: its JSON (an object or a top-level array), its headers, its `Link` relations."""

    body: dict | list
    headers: Mapping[str, str] = field(default_factory=dict)
    links: Mapping[str, str] = field(default_factory=dict)  # rel -> URL, from the `Link` header


class JsonApi:
    """Sends JSON requests through `self.http`, honouring rate limits within the run's deadline.

    No request starts once `monotonic()` has reached the deadline (`OutOfTime`): the run's budget holds
    however slow the source is. `monotonic` is injectable so that tests can run on a virtual clock.
    `clock()` is the source's own time (its `Date` header), so a host clock running ahead of the source's
    never moves the cursor past resolutions the source has not written yet.
    """

    def __init__(
        self,
        http,
        base_url: str,
        headers: Mapping[str, str],
        describe_error: Callable[[requests.Response], str],
        monotonic: Callable[[], float] = time.monotonic,
    ):
        self._http = http
        self._base_url = base_url
        self._headers = dict(headers)
        self._describe_error = describe_error
        self.monotonic = monotonic
        self._skew = 0.0  # seconds the host clock runs ahead of the source's, from the last answer
        # A rate limit's reset beyond a run: nothing is sent before it (GitHub bans clients that keep asking).
        self._quiet_until = 0.0

    def get(self, path: str, params: list[tuple[str, Any]] | None, deadline: float) -> dict:
        """A GET answered with a JSON object."""
        body = self.request('GET', path, params, deadline).body
        if not isinstance(body, dict):
            raise SourceError(f'{self._base_url}{path} answered with JSON that is not an object')
        return body

    def request(
        self, method: str, path: str, params: list[tuple[str, Any]] | None, deadline: float, json: Any = None
    ) -> Answer:
        """`path` is relative to the base URL, or an absolute URL the source handed out (a `next` link);
        `json` is the body of a POST (searches)."""
        url = path if path.startswith(('http://', 'https://')) else self._base_url + path
        if _origin(url) != _origin(self._base_url):
            # A `next` link elsewhere would carry the credential there.
            raise SourceError(f'{self._base_url} handed out a link to another host ({_origin(url)}); not followed')
        quiet = self._quiet_until - self.monotonic() if self._quiet_until else 0.0
        if quiet > 0:
            raise SourceError(f'{self._base_url} asked to wait {quiet:.0f} s more (rate limit); will retry after that')
        for attempt in range(1, MAX_ATTEMPTS + 1):
            if self.monotonic() >= deadline:
                raise OutOfTime
            response = self._send(method, url, params, json, last_attempt=attempt == MAX_ATTEMPTS)
            if response is None:
                continue  # a kept-alive connection the server had closed: once more, on a new one
            self._note_clock(response)
            if not self.retried(response):
                return self._decode(response, path)
            wait = self.wait(response, attempt)
            if wait > MAX_RETRY_WAIT:  # a reset no run may wait for: until then, asking again is only noise
                self._quiet_until = self.monotonic() + wait
            if attempt == MAX_ATTEMPTS or wait > MAX_RETRY_WAIT or self.monotonic() + wait > deadline:
                break
            time.sleep(wait)
        raise SourceError(f'{self._describe_error(response)}; will retry next run')

    def retried(self, response: requests.Response) -> bool:
        """Whether the answer is a passing fault (rate limit, server error) to retry after `wait`."""
        return response.status_code in RETRIED_STATUSES

    def wait(self, response: requests.Response, attempt: int) -> float:
        return retry_after(response, attempt)

    def clock(self) -> datetime:
        """Now, by the source's clock as of its last answer (the host's clock before any answer)."""
        return datetime.fromtimestamp(time.time() - max(0.0, self._skew), timezone.utc)

    @property
    def skew(self) -> float:
        return self._skew

    def _note_clock(self, response: requests.Response) -> None:
        try:
            server = parsedate_to_datetime(response.headers['date']).timestamp()
        except (KeyError, TypeError, ValueError, IndexError):
            return
        # `Date` has whole seconds: only a difference beyond that resolution is a skew.
        ahead = time.time() - server - 1.0
        self._skew = ahead if ahead > 0 else 0.0

    def _send(self, method: str, url: str, params, body, last_attempt: bool) -> requests.Response | None:
        send = self._http.post if method == 'POST' else self._http.get
        extra = {} if body is None else {'json': body}
        try:
            return send(url, params=params, extra_headers=self._headers, persist=True, **extra)  # keep-alive
        except requests.ConnectionError as e:
            if last_attempt or isinstance(e, requests.exceptions.ConnectTimeout):
                raise SourceError(f'cannot reach {self._base_url}: {type(e).__name__}') from None
            return None
        except requests.Timeout:
            raise SourceError(f'{self._base_url} did not answer in time (see the `timeout` option)') from None
        except requests.exceptions.ChunkedEncodingError:
            raise SourceError(f'the connection to {self._base_url} broke in the middle of an answer') from None
        except requests.RequestException as e:
            raise SourceError(f'cannot reach {self._base_url}: {type(e).__name__}') from None

    def _decode(self, response: requests.Response, path: str) -> Answer:
        if response.status_code in (401, 403):
            raise CredentialsRejected(self._describe_error(response), response.status_code)
        if response.status_code >= 400:
            raise SourceError(self._describe_error(response), response.status_code)
        try:
            body = response.json()
        except ValueError:
            raise SourceError(
                f'{self._base_url}{path} answered HTTP {response.status_code} with a body that is not JSON '
                f'(content-type {response.headers.get("content-type", "unknown")!r}): a proxy in between?'
            ) from None
        if not isinstance(body, (dict, list)):
            raise SourceError(f'{self._base_url}{path} answered with JSON that is neither an object nor an array')
        links = {rel: link['url'] for rel, link in (response.links or {}).items() if link.get('url')}
        return Answer(body, response.headers, links)


def describer(tool: str, hints: Mapping[int, str], detail: Callable[[dict], str], *secrets: str | None):
    """`describe_error` for a tool's `JsonApi`: the hint for the status (`{status}` filled in), and what the tool
    said (`detail` of the answer's JSON object), every secret blanked out."""

    def describe_error(response: requests.Response) -> str:
        hint = hints.get(response.status_code, f'{tool} answered HTTP {{status}}').format(status=response.status_code)
        return error_text(hint, response, detail(json_object(response)), secrets)

    return describe_error


def error_text(hint: str, response: requests.Response, detail: str, secrets: Iterable[str | None]) -> str:
    """`<hint> (HTTP <status>: <detail>)`, the server's detail scrubbed of every secret (an error page may echo
    the request)."""
    for secret in secrets:
        if secret:
            detail = detail.replace(secret, '***')
    return f'{hint} (HTTP {response.status_code}{": " + detail[:200] if detail else ""})'


def json_object(response: requests.Response) -> dict:
    """The answer's JSON object, else empty: an error page may be anything."""
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f'{parts.scheme}://{parts.netloc}'.lower()


def retry_after(response: requests.Response, attempt: int) -> float:
    """Seconds to wait: the rate-limit reset the server names, else exponential backoff."""
    for header in RESET_HEADERS:
        value = response.headers.get(header)
        if value is None:
            continue
        try:
            seconds = float(value)
        except ValueError:
            try:  # Retry-After may be an HTTP date
                seconds = parsedate_to_datetime(value).timestamp()
            except (TypeError, ValueError, IndexError):
                continue
        if seconds > _EPOCH:
            seconds -= time.time()
        return max(0.0, seconds)
    return float(2 ** (attempt - 1))
