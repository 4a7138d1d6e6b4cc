"""Reading an HTTP answer within bounds a server cannot stretch, for the tools' client and Datadog's alike.

The check runs inside the Agent's process: a body that inflates to gigabytes, a server that drips a byte at a
time or a page nested a million deep must end one request with a clear error, not the Agent. So a body is read
with `read1` (one socket read at a time, each given only the time left of the request's `timeout`), decoded
here with a cap on what it inflates to (not by urllib3, whose limits depend on its version), and parsed as
strict JSON (UTF-8, no NaN, no number Python cannot hold).
"""

from __future__ import annotations

import json
import math
import time
import zlib
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


def read_body(raw: urllib3.BaseHTTPResponse, limit: int, give_up_at: float) -> bytes:
    """The whole decoded body of `raw` (a streamed urllib3 answer), at most `limit` bytes, by `give_up_at`
    (`time.monotonic()`). Past either, the connection is closed and `BadAnswer` raised."""
    try:
        return _read(raw, limit, give_up_at)
    except BadAnswer:
        raw.close()  # unread data on the connection: never back into the pool
        raise


def _read(raw, limit: int, give_up_at: float) -> bytes:
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
        remaining = give_up_at - time.monotonic()
        if remaining <= 0:
            raise BadAnswer('an answer that did not arrive within `timeout`')
        _set_timeout(raw, remaining)
        try:
            data = raw.read1(CHUNK, decode_content=False)
        except urllib3.exceptions.ReadTimeoutError:
            raise BadAnswer('an answer that did not arrive within `timeout`') from None
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
