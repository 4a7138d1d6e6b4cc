"""A thin HTTP client for Datadog's API: JSON over kept-alive connections, with the Agent's proxy and TLS settings.

`self.http` is for the incident tool (an instance's `headers`, auth, proxy and TLS options are the tool's), so
Datadog gets a client of its own. Its settings are resolved once, the way every Datadog integration resolves
them (`RequestsWrapper` with no instance options: the Agent's `proxy` and `no_proxy`, default TLS
verification), plus the environment's proxy variables as `requests` reads them; then each request is one
urllib3 call. `requests` spends most of a DORA post's CPU re-reading the environment and merging settings per
request: with hundreds of posts per run that was most of the check's CPU.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import urllib3
from requests.utils import get_environ_proxies, select_proxy

from datadog_checks.base.utils.http import RequestsWrapper, should_bypass_proxy
from datadog_checks.base.utils.tls import create_ssl_context

from ..answers import (
    DEFAULT_MAX_RESPONSE_SIZE,
    REDIRECTS,
    BadAnswer,
    MiB,
    TimedOut,
    TooLarge,
    bounded,
    parse_json,
    read_body,
    redirect_target,
)

DEFAULT_TIMEOUT = 10
ERROR_DETAIL = 300  # characters of an error body shown to users


@dataclass(frozen=True)
class DatadogAnswer:
    """Datadog's answer; `status` None when it never came (`detail` says why)."""

    status: int | None
    detail: str  # what to tell users: 'HTTP 400: ...', 'cannot reach ...'
    headers: dict
    document: object = None  # the JSON answer, None when there was none


class DatadogHttp:
    def __init__(self, check, base_url: str, api_key: str, app_key: str | None, connections: int):
        self._base_url = base_url.rstrip('/')
        self._headers = {'DD-API-KEY': api_key, 'Content-Type': 'application/json', 'Accept': 'application/json'}
        self._app_headers = {**self._headers, 'DD-APPLICATION-KEY': app_key or ''}
        timeout = check.config.timeout or DEFAULT_TIMEOUT
        wrapper = RequestsWrapper({'timeout': timeout}, {}, logger=check.log)  # the Agent's settings, resolved
        self.proxy = _proxy_for(self._base_url, wrapper)
        self.verify = wrapper.options['verify']
        connect, read = wrapper.options['timeout']
        self._timeout = max(connect, read)  # the whole request's: connect, headers and body
        self._max_response_size = check.config.max_response_size or DEFAULT_MAX_RESPONSE_SIZE
        options = {
            'maxsize': max(1, connections),  # one kept-alive connection per concurrent write
            'block': False,
            'retries': False,
            'timeout': urllib3.Timeout(connect=connect, read=read),
        }
        if self._base_url.startswith('https'):
            options['ssl_context'] = create_ssl_context(wrapper.tls_config)
        if self.proxy:
            self._pool = urllib3.ProxyManager(self.proxy, proxy_headers=_proxy_auth(self.proxy), **options)
        else:
            self._pool = urllib3.PoolManager(**options)
        # One host: its connection pool, asked directly, spares each request the manager's URL parsing and pool
        # lookup. Not through a plain-HTTP proxy, for which the manager rewrites every request.
        direct = not (self.proxy and self._base_url.startswith('http:'))
        self._host = self._pool.connection_from_url(self._base_url) if direct else None
        self._prefix = urlsplit(self._base_url).path  # an API URL with a path: requests go below it

    def send(self, method: str, path: str, body: dict | None, app_key: bool = False) -> DatadogAnswer:
        url = self._base_url + path
        headers = self._app_headers if app_key else self._headers
        data = json.dumps(body, separators=(',', ':')).encode() if body is not None else None
        for attempt in (1, 2):
            try:
                ends_at = time.monotonic() + self._timeout
                with bounded(ends_at):
                    # No redirect is followed: Datadog's API answers where it is asked, and the keys travel in
                    # headers that urllib3 would carry to any host a redirect names.
                    if self._host is not None:
                        response = self._host.urlopen(
                            method, self._prefix + path, body=data, headers=headers, retries=False, redirect=False,
                            preload_content=False,
                        )  # fmt: skip
                    else:
                        response = self._pool.request(
                            method, url, body=data, headers=headers, preload_content=False, redirect=False
                        )
                content = read_body(response, self._max_response_size * MiB, ends_at)
                break
            except urllib3.exceptions.NewConnectionError as e:  # a ConnectTimeoutError to urllib3, but refused
                return DatadogAnswer(None, f'cannot reach {url}: {_cause(e)}', {})
            except (TimedOut, urllib3.exceptions.TimeoutError):
                return DatadogAnswer(
                    None,
                    f'Datadog did not answer in time: {method} {path} took longer than `timeout` '
                    f'({self._timeout:g} s; {self._base_url})',
                    {},
                )
            except urllib3.exceptions.ProtocolError as e:
                # A kept-alive connection the server closed meanwhile: once more on a new one (writes are idempotent).
                if attempt == 2:
                    return DatadogAnswer(None, f'cannot reach {url}: {_cause(e)}', {})
            except urllib3.exceptions.HTTPError as e:
                return DatadogAnswer(None, f'cannot reach {url}: {_cause(e)}', {})
            except BadAnswer as e:
                return DatadogAnswer(None, self._bad_answer(e, path), {})
        if response.status in REDIRECTS:
            host = urlsplit(redirect_target(response.headers.get('location'), url)).netloc or '(none)'
            return DatadogAnswer(
                None,
                f'Datadog redirected {path} to {host} (HTTP {response.status}); nothing was sent there: set '
                f'`datadog_api_url` to the API of your Datadog site (now {self._base_url})',
                {},
            )
        text = content.decode('utf-8', 'replace')
        try:
            document = parse_json(content) if content else None
        except BadAnswer as e:
            return DatadogAnswer(None, self._bad_answer(e, path), {})
        except ValueError:
            document = None
        return DatadogAnswer(
            response.status, f'HTTP {response.status}: {_error_text(document, text)}', response.headers, document
        )

    def _bad_answer(self, error: BadAnswer, path: str) -> str:
        limit = f' than `max_response_size` ({self._max_response_size} MiB)' if isinstance(error, TooLarge) else ''
        return f'Datadog answered {error}{limit} at {path}'

    def close(self) -> None:
        self._pool.clear()
        self._host = None  # closed with the others: any later request goes through the manager, which opens anew


def _proxy_for(url: str, wrapper: RequestsWrapper) -> str | None:
    """The proxy for `url`: the Agent's (unless its `no_proxy` names the host), else the environment's, as requests
    merges them."""
    agent = dict(wrapper.options['proxies'] or {})
    if wrapper.no_proxy_uris and should_bypass_proxy(url, wrapper.no_proxy_uris):
        return None
    proxies = {**get_environ_proxies(url), **agent}
    return select_proxy(url, proxies) or None


def _proxy_auth(proxy: str) -> dict | None:
    parts = urlsplit(proxy)
    if parts.username is None:
        return None
    return urllib3.make_headers(proxy_basic_auth=f'{unquote(parts.username)}:{unquote(parts.password or "")}')


def _cause(error: Exception) -> str:
    reason = getattr(error, 'reason', None)
    return type(reason or error).__name__


def _error_text(document, text: str) -> str:
    """Datadog's error objects (`{"errors": [{"status", "title", "detail"}]}`) as one line; else the body's start."""
    errors = document.get('errors') if isinstance(document, dict) else None
    if isinstance(errors, list) and errors:
        parts = []
        for error in errors:
            if isinstance(error, dict):
                parts.append(': '.join(str(error[name]) for name in ('title', 'detail') if error.get(name)))
            else:
                parts.append(str(error))
        return '; '.join(part for part in parts if part)[:ERROR_DETAIL]
    return text[:ERROR_DETAIL]
