"""Reading an HTTP answer within bounds a server cannot stretch, for the tools' client and Datadog's alike.

The check runs inside the Agent's process: a body that inflates to gigabytes, a server that drips a byte at a
time or a page nested a million deep must end one request with a clear error, not the Agent. So a request has
`timeout` as a whole, from the send (`bounded` up to its headers, then `read_body`); a body is read with `read1`
(one socket read at a time, each given only the time left of the request), decoded here with a cap on what it
inflates to (not by urllib3, whose limits depend on its version), and parsed as strict JSON (UTF-8, no NaN, no
number Python cannot hold).
"""

from __future__ import annotations

import heapq
import http.client
import json
import math
import socket
import sys
import threading
import time
import zlib
from contextlib import contextmanager
from urllib.parse import urljoin

import urllib3

MiB = 1 << 20
# MiB; the largest legitimate page of any tool is under 4 MiB (docs/design.md, "Answers the check does not control")
DEFAULT_MAX_RESPONSE_SIZE = 32
CHUNK = 64 * 1024
# What the check asks servers to compress with: what `read_body` decodes (never br or zstd, even if the Agent's
# Python could: a decoder this module does not bound).
ACCEPT_ENCODING = 'gzip, deflate'
REDIRECTS = frozenset({301, 302, 303, 307, 308})


class BadAnswer(Exception):
    """The body could not be read within the bounds, or is not the JSON it should be; the message says which, in
    words for users (the caller prefixes the tool and the path)."""


class TooLarge(BadAnswer):
    pass


class TimedOut(BadAnswer):
    """The request (connect, headers and body together) outlasted its `timeout`."""

    def __init__(self):
        super().__init__('an answer that did not arrive within `timeout`')


@contextmanager
def bounded(ends_at: float):
    """Runs the request sent in the block (up to its headers) until `ends_at` (`time.monotonic()`) at most:
    then its socket is shut down and `TimedOut` raised. Past `ends_at` the block may also return (headers cut
    off where they stood): `read_body`, given the same `ends_at`, then raises `TimedOut`."""
    watch = _WATCHDOG.arm(ends_at)
    try:
        yield
    except Exception:
        if _WATCHDOG.disarm(watch):
            raise TimedOut from None  # whatever the shut socket made of the read, the cause is the time
        raise
    finally:
        _WATCHDOG.disarm(watch)


class _Watchdog:
    """One daemon thread for the process that ends requests at their time, woken at the earliest.

    A socket read returns as soon as a byte comes, so a read timeout cannot bound a status line and headers sent
    a byte at a time; and neither requests nor urllib3 hands the socket to the caller before the headers are
    parsed. So at a request's end this thread looks, on the stack of the thread sending it, for the connection
    (http.client's `HTTPConnection`, which urllib3's extends) and shuts its socket down: the blocked read
    returns at once. Nothing there yet (still connecting, within its own connect timeout): it looks again soon.
    """

    AGAIN = 0.05  # seconds until it looks again for a socket that was not there yet

    def __init__(self):
        self._wake = threading.Condition()
        self._due: list[tuple[float, int, _Watch]] = []  # a heap by end time; ended watches are dropped lazily
        self._thread: threading.Thread | None = None

    def arm(self, ends_at: float) -> _Watch:
        watch = _Watch(threading.get_ident())
        with self._wake:
            first = not self._due or ends_at < self._due[0][0]
            heapq.heappush(self._due, (ends_at, id(watch), watch))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name='dora_incidents-timeout', daemon=True)
                self._thread.start()
            elif first:
                self._wake.notify()
        return watch

    def disarm(self, watch: _Watch) -> bool:
        """Ends the watch; whether it had to shut the request's socket down."""
        with self._wake:  # never while `_run` is shutting this request's socket down
            watch.done = True
            return watch.fired

    def _run(self) -> None:
        with self._wake:
            while True:
                while self._due and self._due[0][2].done:
                    heapq.heappop(self._due)
                if not self._due:
                    self._wake.wait()
                    continue
                ends_at, key, watch = self._due[0]
                left = ends_at - time.monotonic()
                if left > 0:
                    self._wake.wait(left)
                    continue
                heapq.heappop(self._due)
                if _shut_down(watch.thread):
                    watch.fired = True
                else:
                    heapq.heappush(self._due, (time.monotonic() + self.AGAIN, key, watch))


class _Watch:
    __slots__ = ('done', 'fired', 'thread')

    def __init__(self, thread: int):
        self.thread, self.done, self.fired = thread, False, False


def _shut_down(thread: int) -> bool:
    """Shuts down the socket of the HTTP connection the thread is using; whether there was one."""
    frame = sys._current_frames().get(thread)
    while frame is not None:
        connection = frame.f_locals.get('self')
        sock = getattr(connection, 'sock', None) if isinstance(connection, http.client.HTTPConnection) else None
        if isinstance(sock, socket.socket):
            try:
                # socket's own shutdown, not SSLSocket's: that one also drops its TLS state under the reading thread
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
            except OSError:  # closed meanwhile: the request ended by itself
                pass
            return True
        frame = frame.f_back
    return False


_WATCHDOG = _Watchdog()


def read_body(raw: urllib3.BaseHTTPResponse, limit: int, ends_at: float) -> bytes:
    """The whole decoded body of `raw` (a streamed urllib3 answer), at most `limit` bytes, by `ends_at`
    (`time.monotonic()`). Past either, the connection is closed and `BadAnswer` raised."""
    try:
        return _read(raw, limit, ends_at)
    except BadAnswer:
        raw.close()  # unread data on the connection: never back into the pool
        raise


def _read(raw, limit: int, ends_at: float) -> bytes:
    encoding = (raw.headers.get('content-encoding') or 'identity').strip().lower()
    if encoding in ('gzip', 'x-gzip', 'deflate'):
        decoder = zlib.decompressobj(wbits=47)  # a gzip or zlib header, told apart by zlib
    elif encoding == 'identity':
        decoder = None
        length = raw.headers.get('content-length')
        if length and length.isdigit() and int(length) > limit:
            raise TooLarge(f'an answer of {int(length) // MiB} MiB')
    else:
        raise BadAnswer(f'a body compressed with {encoding!r}, which the check did not ask for')
    parts: list[bytes] = []
    size = 0
    while True:
        remaining = ends_at - time.monotonic()
        if remaining <= 0:
            raise TimedOut
        _set_timeout(raw, remaining)
        try:
            data = raw.read1(CHUNK, decode_content=False)
        except urllib3.exceptions.ReadTimeoutError:
            raise TimedOut from None
        except urllib3.exceptions.ProtocolError:
            raise BadAnswer('an answer cut off: the connection broke in the middle of it') from None
        if not data:
            break
        if decoder is None:
            size += len(data)
            if size > limit:
                raise TooLarge('a larger answer')
            parts.append(data)
            continue
        while data:
            try:
                piece = decoder.decompress(data, limit + 1 - size)
            except zlib.error:
                raise BadAnswer(f'a body that is not valid {encoding}') from None
            size += len(piece)
            if size > limit:
                raise TooLarge('a larger answer once decompressed')
            parts.append(piece)
            data = decoder.unconsumed_tail
            if decoder.eof and decoder.unused_data:  # gzip members one after another make one body
                data, decoder = decoder.unused_data, zlib.decompressobj(wbits=47)
    if decoder is not None and not decoder.eof:
        raise BadAnswer(f'an answer cut off: its {encoding} stream ends early')
    return b''.join(parts)


def _set_timeout(raw, seconds: float) -> None:
    """Gives the next socket read only what is left of the request's time (a drip then cannot outlast it)."""
    connection = getattr(raw, 'connection', None)
    sock = getattr(connection, 'sock', None)
    if sock is not None:
        sock.settimeout(max(seconds, 0.001))


def parse_json(body: bytes):
    """Strict JSON: UTF-8, finite numbers Python holds, nesting Python's parser can follow."""
    try:
        text = body.decode('utf-8-sig')
    except UnicodeDecodeError as e:
        raise BadAnswer(f'a body that is not valid UTF-8 (byte {e.start})') from None
    try:
        return json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    except RecursionError:
        raise BadAnswer('JSON nested too deeply to be read') from None
    except _NotANumber as e:
        raise BadAnswer(f'JSON with {e}, which is not a number JSON allows') from None
    except json.JSONDecodeError as e:
        # A document that would go on (its last string or value open at the end): the body was cut off.
        ended = e.pos >= len(text.rstrip()) or e.msg.startswith('Unterminated string')
        if ended and text.lstrip()[:1] in ('{', '['):
            raise BadAnswer('a body that is not JSON: it is cut off before its end (truncated)') from None
        raise
    except ValueError as e:
        if 'digits' in str(e):  # an integer past Python's int_max_str_digits
            raise BadAnswer('JSON with a number too large to be read') from None
        raise


class _NotANumber(ValueError):
    pass


def _no_constant(name: str):
    raise _NotANumber(name)


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotANumber(text[:20])
    return value


def redirect_target(location: str | None, url: str) -> str:
    """The absolute URL a redirect names (relative to the URL asked)."""
    return urljoin(url, location or '')
