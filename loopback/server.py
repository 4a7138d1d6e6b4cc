"""A real HTTP server on 127.0.0.1 with on-demand faults, shared by the PagerDuty simulator and the intake."""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlencode, urlsplit


@dataclass
class Fault:
    """What to do instead of (or to) the next matching response."""

    status: int | None = None  # answer this status instead of the real response
    headers: dict = field(default_factory=dict)
    body: bytes | None = None  # raw body to send with `status` (e.g. a proxy's HTML page)
    delay: float = 0.0  # seconds to wait before answering (a read timeout, when over the client's timeout)
    reset: bool = False  # announce the whole body, send half of it, then reset the connection
    truncate: bool = False  # a well-formed HTTP answer whose body is only the first half of the real one
    path: str | None = None  # only requests to this path
    skip: int = 0  # let this many matching requests through first
    times: int = 1  # how many requests this fault hits
    # A hostile server or a broken proxy (`LoopbackServer.streamed` counts the bytes these managed to send):
    redirect: str | None = None  # a 302 (or `status`) to this URL (the request's query kept, if it has none)
    flood: int = 0  # a 200 whose JSON body is this many bytes, no Content-Length, sent until the client stops
    inflate: int = 0  # a 200 gzip body that inflates to this many bytes (a decompression bomb)
    drip: float = 0.0  # the real answer, announced whole, its body sent one byte every `drip` seconds


@dataclass
class Request:
    method: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]
    body: bytes


@dataclass
class Response:
    status: int
    body: bytes = b''
    headers: dict = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, document, headers: dict | None = None) -> Response:
        return cls(status, json.dumps(document).encode(), {'Content-Type': 'application/json', **(headers or {})})


class LoopbackServer:
    """Subclasses implement `handle(request) -> Response`."""

    def __init__(self):
        self.requests: list[Request] = []
        self._faults: list[Fault] = []
        self._lock = threading.RLock()
        self._httpd: ThreadingHTTPServer | None = None
        self.clock_offset = 0.0  # seconds the server's clock (its `Date` header) is off from this host's
        # Added to every response, outside the lock: a network round trip (requests overlap as on a network).
        self.latency = 0.0
        self.connections = 0  # TCP connections accepted since start (a kept-alive connection counts once)
        self.streamed = 0  # body bytes a flood, inflate or drip fault managed to send

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self):
        handler = type('Handler', (_Handler,), {'server_impl': self})
        self._httpd = _QuietServer(('127.0.0.1', 0), handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, kwargs={'poll_interval': 0.05}, daemon=True).start()
        return self

    def stop(self):
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f'http://{host}:{port}'

    # -- faults ------------------------------------------------------------------------------------
    def inject(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _take_fault(self, path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.path not in (None, path):
                    continue
                if fault.skip:
                    fault.skip -= 1
                    return None
                fault.times -= 1
                if fault.times <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    def handle(self, request: Request) -> Response:
        raise NotImplementedError

    def _serve(self, request: Request) -> tuple[Response, Fault | None]:
        with self._lock:
            self.requests.append(request)
        fault = self._take_fault(request.path)
        if fault and fault.delay:
            time.sleep(fault.delay)
        if fault and fault.redirect:
            query = '' if '?' in fault.redirect or not request.query else '?' + urlencode(request.query)
            return Response(fault.status or 302, b'', {'Location': fault.redirect + query}), None
        if fault and fault.status is not None:
            body = fault.body if fault.body is not None else json.dumps({'error': {'message': 'injected'}}).encode()
            return Response(fault.status, body, {'Content-Type': 'application/json', **fault.headers}), None
        with self._lock:
            return self.handle(request), fault


BLOCK = 1 << 20


def _flooding(size: int):
    """A JSON string `size` bytes long, in blocks (never built whole)."""
    yield b'{"data": "'
    for _ in range(max(0, size - 12) // BLOCK):
        yield b'a' * BLOCK
    yield b'"}'


def _inflating(size: int):
    """gzip of `size` zero bytes, a MiB at a time: after a full flush the compressor forgets its history, so
    every MiB after the first compresses to the same ~1 KiB, computed once."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(BLOCK)
    yield compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    block = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    for _ in range(size // BLOCK - 1):
        yield block
    # No gzip trailer: a client that read this far has already failed.


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        # A client that gave up (timeout) or a connection the server reset on purpose is part of the game.
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    # Unbuffered writes split headers and body, and the client's delayed ACK then costs ~40 ms a request:
    # each response goes out in ONE write (headers and body joined, see `_dispatch`), with Nagle off.
    wbufsize = 1 << 16
    server_impl: LoopbackServer

    def setup(self):
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        impl = self.server_impl
        with impl._lock:
            impl.connections += 1

    def do_GET(self):
        self._dispatch()

    def do_POST(self):
        self._dispatch()

    def _dispatch(self):
        parts = urlsplit(self.path)
        length = int(self.headers.get('Content-Length') or 0)
        body = self.rfile.read(length) if length else b''
        if len(body) < length:  # the client died mid-request (a killed Agent): nothing arrived
            self.close_connection = True
            return
        request = Request(
            self.command,
            parts.path,
            parse_qsl(parts.query, keep_blank_values=True),
            {k.lower(): v for k, v in self.headers.items()},
            body,
        )
        response, fault = self.server_impl._serve(request)
        if self.server_impl.latency:
            time.sleep(self.server_impl.latency)
        if fault and (fault.flood or fault.inflate or fault.drip):
            self._hostile(fault, response)
            return
        body = response.body
        if fault and (fault.truncate or fault.reset):
            body = body[: max(1, len(body) // 2)]
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header('Content-Length', str(len(response.body) if fault and fault.reset else len(body)))
        if fault and fault.truncate:
            self.send_header('Connection', 'close')
        # end_headers() would write the headers on their own: one write for the whole response instead.
        self._headers_buffer.append(b'\r\n')
        self.wfile.write(b''.join(self._headers_buffer) + body)
        self._headers_buffer = []
        if fault and (fault.truncate or fault.reset):
            self.wfile.flush()
            if fault.reset:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b'\x01\x00\x00\x00\x00\x00\x00\x00')
            self.close_connection = True

    def _hostile(self, fault: Fault, response: Response) -> None:
        """Sends a body that never fits (flood, inflate) or never ends in time (drip), counting what got out."""
        self.close_connection = True
        self.send_response(200 if not fault.drip else response.status)
        if fault.drip:
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.send_header('Content-Length', str(len(response.body)))
            pieces, pause = (response.body[n : n + 1] for n in range(len(response.body))), fault.drip
        else:
            self.send_header('Content-Type', 'application/json')
            if fault.inflate:
                self.send_header('Content-Encoding', 'gzip')
            self.send_header('Connection', 'close')
            pieces, pause = (_inflating(fault.inflate) if fault.inflate else _flooding(fault.flood)), 0.0
        self.end_headers()
        try:
            for piece in pieces:
                self.wfile.write(piece)
                self.wfile.flush()
                with self.server_impl._lock:
                    self.server_impl.streamed += len(piece)
                if pause:
                    time.sleep(pause)
        except OSError:  # the client stopped reading and closed: what it was meant to do
            pass

    def date_time_string(self, timestamp=None):
        return super().date_time_string(time.time() + self.server_impl.clock_offset if timestamp is None else timestamp)

    def log_message(self, format, *args):  # keep test output clean
        pass
