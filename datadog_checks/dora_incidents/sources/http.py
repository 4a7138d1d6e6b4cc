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

from ..answers import (
    ACCEPT_ENCODING,
    DEFAULT_MAX_RESPONSE_SIZE,
    REDIRECTS,
    BadAnswer,
    MiB,
    TooLarge,
    parse_json,
    read_body,
    redirect_target,
)

# A single run may wait this long at most for one rate-limit reset; a longer wait ends the run and the
# next run resumes where this one stopped.
MAX_RETRY_WAIT = 10.0
MAX_ATTEMPTS = 3
RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})
# Rate-limit answers name the wait in one of these headers: seconds, or an epoch time (told apart by size).
RESET_HEADERS = ('retry-after', 'ratelimit-reset', 'x-ratelimit-reset', 'x-rate-limit-reset')
_EPOCH = 1_000_000_000
MAX_REDIRECTS = 5  # within the configured host (GitHub moves a renamed repository's URLs so)
DEFAULT_TIMEOUT = 10.0


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
        self._headers = {'Accept-Encoding': ACCEPT_ENCODING, **headers}
        self._describe_error = describe_error
        self.monotonic = monotonic
        self._skew = 0.0  # seconds the host clock runs ahead of the source's, from the last answer
        # A rate limit's reset beyond a run: nothing is sent before it (GitHub bans clients that keep asking).
        self._quiet_until = 0.0
        self.tool = 'the tool'  # its display name, for messages (`Source` sets it)
        self.max_response_size = DEFAULT_MAX_RESPONSE_SIZE  # MiB of decoded body, per answer
        # A whole request (connect, headers, body) gets this long: the Agent's `timeout` option, as `self.http`
        # resolved it.
        timeouts = getattr(http, 'options', {}).get('timeout')
        self.timeout = float(max(timeouts) if isinstance(timeouts, tuple) else timeouts or DEFAULT_TIMEOUT)

    def get(self, path: str, params: list[tuple[str, Any]] | None, deadline: float) -> dict:
        """A GET answered with a JSON object."""
        body = self.request('GET', path, params, deadline).body
        if not isinstance(body, dict):
            raise SourceError(f'{self._base_url}{path} answered with JSON that is not an object')
        return body

    def request(
        self,
        method: str,
        path: str,
        params: list[tuple[str, Any]] | None,
        deadline: float,
        json: Any = None,
        form: Mapping[str, str] | None = None,
    ) -> Answer:
        """`path` is relative to the base URL, or an absolute URL the source handed out (a `next` link);
        `json` is the body of a POST (searches), `form` a form-encoded one (an OAuth token request)."""
        url = path if path.startswith(('http://', 'https://')) else self._base_url + path
        if _origin(url) != _origin(self._base_url):
            # A `next` link elsewhere would carry the credential there.
            raise SourceError(f'{self._base_url} handed out a link to another host ({_origin(url)}); not followed')
        quiet = self._quiet_until - self.monotonic() if self._quiet_until else 0.0
        if quiet > 0:
            raise SourceError(f'{self._base_url} asked to wait {quiet:.0f} s more (rate limit); will retry after that')
        attempt = redirects = 0
        while attempt < MAX_ATTEMPTS:
            if self.monotonic() >= deadline:
                raise OutOfTime
            attempt += 1
            body = {'json': json} if json is not None else {'data': form} if form is not None else {}
            response = self._send(method, url, params, body, path, last_attempt=attempt == MAX_ATTEMPTS)
            if response is None:
                continue  # a kept-alive connection the server had closed: once more, on a new one
            if response.status_code in REDIRECTS and redirects < MAX_REDIRECTS:
                url, redirects, attempt = self._redirected(response, url, path), redirects + 1, attempt - 1
                params = None  # the query is the Location's
                if response.status_code not in (307, 308):
                    method, json, form = 'GET', None, None
                continue
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

    def _redirected(self, response: requests.Response, url: str, path: str) -> str:
        """Where a redirect within the configured host leads. Anywhere else, nothing is sent: every credential
        (a header of the tool's own, Basic, a token in the query) would go with the request, and no tool's API
        redirects elsewhere unless `api_url` names the wrong address."""
        target = redirect_target(response.headers.get('location'), url)
        if _origin(target) != _origin(self._base_url):
            host = urlsplit(target).netloc or '(none)'
            raise SourceError(
                f'{self.tool} redirected {_path(path)} to another host, {host} (HTTP {response.status_code}); '
                f'nothing was sent there: set `api_url` to the address {self.tool} answers at '
                f'(now {self._base_url})'
            )
        return target

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

    def _send(
        self, method: str, url: str, params, body: dict, path: str, last_attempt: bool
    ) -> requests.Response | None:
        """The answer, its body read (within `max_response_size` and `timeout`); None for a kept-alive
        connection the server had closed. `body`: `json=` or `data=` for `requests`, or nothing."""
        send = self._http.post if method == 'POST' else self._http.get
        try:
            response = send(
                url,
                params=params,
                extra_headers=self._headers,
                persist=True,  # keep-alive
                stream=True,  # the body is read here, within bounds
                allow_redirects=False,  # `_redirected` decides
                **body,
            )
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
        # The whole body within `timeout` from the headers on (each read of those has `timeout` too): measured
        # from the send, a loaded host would fail answers that are only slow to start.
        give_up_at = time.monotonic() + self.timeout
        try:
            content = read_body(response.raw, self.max_response_size * MiB, give_up_at)
        except TooLarge as e:
            raise SourceError(
                f'{self.tool} answered {e} than `max_response_size` ({self.max_response_size} MiB) at '
                f'{_path(path)}; the read stopped there and resumes next run (raise `max_response_size` if the '
                f'answer is legitimate)'
            ) from None
        except BadAnswer as e:
            raise SourceError(f'{self.tool} answered {e} at {_path(path)} (`api_url` {self._base_url})') from None
        target = getattr(response, '__wrapped__', response)  # the Agent's ResponseWrapper around requests'
        target._content, target._content_consumed = content, True
        return response

    def _decode(self, response: requests.Response, path: str) -> Answer:
        if response.status_code in (401, 403):
            raise CredentialsRejected(self._describe_error(response), response.status_code)
        if response.status_code >= 400:
            raise SourceError(self._describe_error(response), response.status_code)
        try:
            body = parse_json(response.content)
        except BadAnswer as e:
            raise SourceError(f'{self.tool} answered {e} at {_path(path)}') from None
        except ValueError:
            raise SourceError(
                f'{self.tool} answered HTTP {response.status_code} at {_path(path)} with a body that is not JSON '
                f'(content-type {response.headers.get("content-type", "unknown")!r}): a proxy in between? '
                f'(`api_url` {self._base_url})'
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
        body = parse_json(response.content)
    except (BadAnswer, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def _path(path: str) -> str:
    """The path of a request, for messages: never its query (a token may travel there)."""
    return urlsplit(path).path or path


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
