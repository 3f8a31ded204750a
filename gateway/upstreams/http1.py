"""A lean HTTP/1.1 client for the upstream hot path: kept-alive connections per origin, every read bounded.

An OpenAI-compatible upstream needs one thing of HTTP: POST a body, then read a whole answer or a stream. aiohttp's
client does that at about as much CPU a request as the rest of the gateway together (its URL, header, cookie,
trace and payload machinery); this one writes the request as bytes, parses the answer with httptools (the parser
uvicorn serves with) and raises the gateway's own errors, so nothing of it leaks past this module. It never
follows a redirect, keeps no cookies, reads at most HEAD_BYTES of a head and pauses the socket while BUFFER_BYTES
of a body wait unread.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

import httptools

from gateway.errors import (
    UpstreamCut,
    UpstreamError,
    UpstreamMalformed,
    UpstreamSilent,
    UpstreamTimeout,
    UpstreamUnavailable,
)

HEAD_BYTES = 64 << 10  # the most of a status line and headers read before they end
BUFFER_BYTES = 1 << 18  # body bytes waiting unread at which the socket is paused
IDLE_S = 15.0  # how long a connection is kept unused before it is closed
IDLE_PER_ORIGIN = 512  # connections kept unused for one origin; more are closed
SILENCE_S = 1.0  # a close without an answer after this long is a silent upstream, not a refusal
UNSAFE = frozenset("\r\n\0")
FRAMING = frozenset({"host", "content-length", "transfer-encoding", "connection", "keep-alive", "te", "trailer",
                     "upgrade", "expect", "proxy-connection"})  # written by this client alone
TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # a header name, as RFC 9110 spells it


class Unasked(Exception):
    """Bytes of a second answer after the first: the parser is stopped there."""


@dataclass(frozen=True, slots=True)
class Origin:
    """Where connections go: scheme, host and port, and the Host header and path prefix a URL gives."""

    tls: bool
    host: str
    port: int
    authority: str
    prefix: str

    @classmethod
    def of(cls, url: str) -> Origin:
        """The origin of an http or https URL; ValueError for anything else."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        tls = parts.scheme == "https"
        port = parts.port or (443 if tls else 80)
        host = parts.hostname
        shown = f"[{host}]" if ":" in host else host
        authority = shown if port == (443 if tls else 80) else f"{shown}:{port}"
        return cls(tls, host, port, authority, parts.path.rstrip("/"))


def header_lines(headers: Mapping[str, str]) -> bytes:
    """Headers as they go on the wire; ValueError for a name or value that would break the request's framing."""
    lines = []
    for name, value in headers.items():
        if not TOKEN.fullmatch(name) or name.lower() in FRAMING or UNSAFE.intersection(value):
            raise ValueError(f"header {name[:64]!r} is not fit to send")
        lines.append(f"{name}: {value}\r\n")
    try:
        return "".join(lines).encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError("a header is not latin-1") from None


def head_bytes(origin: Origin, path: str, fixed: bytes, headers: Mapping[str, str], length: int) -> bytes:
    """A POST's request line and headers: fixed (from header_lines, once) and headers, checked here."""
    extra = header_lines(headers) if headers else b""
    line = f"POST {origin.prefix}{path} HTTP/1.1\r\nhost: {origin.authority}\r\n".encode("latin-1")
    return b"%s%s%scontent-length: %d\r\n\r\n" % (line, fixed, extra, length)


class Response:
    """One answer in progress: its status and headers once the head is in, then its body as it arrives."""

    __slots__ = ("_buffered", "_chunks", "_conn", "_error", "_framed", "_head_seen", "_idle", "_informational",
                 "_last", "_parser", "_released", "_started", "_timer", "_waiter", "_whole", "complete", "headers",
                 "keep_alive", "status", "upstream")

    def __init__(self, upstream: str, conn: Connection, deadline: float) -> None:
        self.upstream = upstream
        self.status = 0
        self.headers: dict[str, str] = {}
        self.complete = False
        self.keep_alive = False
        self._conn = conn
        self._parser = httptools.HttpResponseParser(self)
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._head_seen = 0
        self._framed = False  # a length or chunked framing was announced: EOF before the end is a cut
        self._informational = False
        self._error: UpstreamError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._released = False
        self._whole = False  # read whole: the socket is never paused for it
        self._idle: float | None = None
        self._started = time.monotonic()
        self._last = 0.0
        self._timer: asyncio.TimerHandle | None = conn.loop.call_at(deadline, self._expire)

    # The parser's callbacks.
    def on_message_begin(self) -> None:
        if self.complete:  # a second answer to one request: never read, and the connection not trusted again
            self.keep_alive = False
            raise Unasked

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        if key in ("content-length", "transfer-encoding"):
            self._framed = True
        self.headers[key] = f"{self.headers[key]}, {text}" if key in self.headers else text

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:  # an interim answer (103 Early Hints): the real one follows
            self._informational = True
            self.headers = {}
            self._framed = False
            return
        self.status = status
        if status in (204, 304):
            self._framed = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered >= BUFFER_BYTES and not self._whole:
            self._conn.pause()
        self._wake()

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            return
        self.keep_alive = self._parser.should_keep_alive()
        self._finished()

    # Fed by the connection.
    def feed(self, data: bytes) -> None:
        """Parse bytes off the socket; a head too long or bytes that are not HTTP fail the answer."""
        if self.complete:
            self.keep_alive = False  # bytes after the answer: the connection is not trusted again
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError:
            if not self.complete:
                raise
        except httptools.HttpParserUpgrade:
            self.fail(UpstreamMalformed(self.upstream, "the answer asked to switch protocols"))
        except httptools.HttpParserError as exc:
            self.fail(UpstreamUnavailable(self.upstream, f"not an HTTP answer: {str(exc)[:80]}"))
        if not self.status and self._error is None:
            self._head_seen += len(data)
            if self._head_seen > HEAD_BYTES:
                self.fail(UpstreamMalformed(self.upstream, f"the answer's head is over {HEAD_BYTES} bytes"))
        if self._idle is not None:
            self._last = self._conn.loop.time()

    def lost(self, exc: Exception | None) -> None:
        """The connection closed: the end of a body sent until close, else a failure."""
        if self.complete or self._error is not None:
            return
        if self.status and not self._framed and exc is None:
            self._finished()
        elif self.status:
            self.fail(UpstreamCut(self.upstream, "response cut"))
        elif time.monotonic() - self._started >= SILENCE_S:
            self.fail(UpstreamSilent(self.upstream))
        else:
            self.fail(UpstreamUnavailable(self.upstream, "disconnected"))

    def fail(self, error: UpstreamError) -> None:
        """End the answer with error, and close its connection."""
        if self._error is None and not self.complete and not self._released:
            self._error = error
            self._cancel_timer()
            self._conn.close()
            self._wake()

    # Read by the exchange.
    async def head(self) -> None:
        """Wait for the status and headers."""
        while not self.status:
            await self._wait()

    def stream(self, idle: float) -> None:
        """From now on, each read waits at most idle seconds for bytes, and no deadline is left."""
        self._idle = idle
        self._last = self._conn.loop.time()
        self._cancel_timer()
        if not self.complete:
            self._timer = self._conn.loop.call_at(self._last + idle, self._expire)

    async def chunk(self) -> bytes:
        """The body bytes that came since the last call; b'' once the body is whole."""
        while not self._chunks:
            if self.complete:
                return b""
            await self._wait()
        data = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
        self._chunks.clear()
        self._buffered = 0
        self._conn.resume()
        return data

    async def read(self) -> bytes:
        """The whole body (its length was checked by the caller)."""
        self._whole = True
        self._conn.resume()
        while not self.complete:
            await self._wait()
        data = b"".join(self._chunks)
        self._chunks.clear()
        return data

    def release(self) -> None:
        """Done with the answer: its connection goes back to the pool when it can serve another, else closes.

        Only the first call counts: by a second, the connection may be carrying another request.
        """
        if self._released:
            return
        self._released = True
        self._cancel_timer()
        if self.complete and self.keep_alive and self._error is None:
            self._conn.idle()
        else:
            self._conn.close()

    def _finished(self) -> None:
        self.complete = True
        self._cancel_timer()
        self._wake()

    async def _wait(self) -> None:
        if self._error is not None:
            raise self._error
        self._waiter = self._conn.loop.create_future()
        try:
            await self._waiter
        except asyncio.CancelledError:
            self.fail(UpstreamUnavailable(self.upstream, "given up"))  # the connection is mid-answer: closed
            raise
        finally:
            self._waiter = None
        if self._error is not None:
            raise self._error

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _expire(self) -> None:
        self._timer = None
        if self._idle is not None and self.status:
            due = self._last + self._idle
            if due > self._conn.loop.time():
                self._timer = self._conn.loop.call_at(due, self._expire)
                return
        self.fail(UpstreamTimeout(self.upstream))

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class Connection(asyncio.Protocol):
    """One kept-alive connection to an origin; it carries one answer at a time."""

    def __init__(self, pool: Pool, origin: Origin, loop: asyncio.AbstractEventLoop) -> None:
        self.pool = pool
        self.origin = origin
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.response: Response | None = None
        self.closed = False
        self.idle_since = 0.0
        self._paused = False
        self._drained: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is one, without subclassing it

    def data_received(self, data: bytes) -> None:
        if self.response is None:
            self.close()  # bytes nobody asked for: the connection is not trusted again
        else:
            self.response.feed(data)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.response is not None:
            self.response.lost(exc)
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def pause_writing(self) -> None:
        self._drained = self.loop.create_future()

    def resume_writing(self) -> None:
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        self._drained = None

    def pause(self) -> None:
        """Stop reading the socket until the body's reader catches up."""
        if not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        """Read the socket again."""
        if self._paused and self.transport is not None and not self.closed:
            self._paused = False
            self.transport.resume_reading()

    async def send(self, upstream: str, head: bytes, body: bytes, deadline: float) -> Response:
        """Write a request and return its answer in progress."""
        assert self.transport is not None
        response = self.response = Response(upstream, self, deadline)
        if len(body) < 1 << 16:
            self.transport.write(head + body)
        else:
            self.transport.write(head)
            self.transport.write(body)
        if self._drained is not None:
            try:
                await self._drained
            except BaseException:
                response.fail(UpstreamUnavailable(upstream, "given up"))
                raise
        return response

    def idle(self) -> None:
        """The answer was read whole: back to the pool."""
        self.response = None
        if self.closed:
            return
        self.resume()
        self.pool.put(self)

    def close(self) -> None:
        """Close the connection."""
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class Pool:
    """The process's upstream connections, kept alive per origin; closed once, by the serving layer."""

    def __init__(self, idle_s: float = IDLE_S, tls: ssl.SSLContext | None = None) -> None:
        self.idle_s = idle_s
        self._idle: dict[Origin, list[Connection]] = {}
        self._tls = tls  # made on first use: the system's CAs (SSL_CERT_FILE and SSL_CERT_DIR name others)
        self._sweeper: asyncio.TimerHandle | None = None
        self.closed = False

    async def post(self, upstream: str, origin: Origin, path: str, fixed: bytes, headers: Mapping[str, str],
                   body: bytes, connect_s: float, deadline: float) -> Response:
        """POST body to origin's prefix + path; the answer once its request is written (its head still to come)."""
        if self.closed:
            raise UpstreamUnavailable(upstream, "the gateway is shutting down")
        try:
            head = head_bytes(origin, path, fixed, headers, len(body))
        except ValueError as exc:
            raise UpstreamUnavailable(upstream, str(exc)) from None
        conn = self._reused(origin) or await self._connect(upstream, origin, connect_s)
        return await conn.send(upstream, head, body, deadline)

    def put(self, conn: Connection) -> None:
        """Keep a connection that can carry another request."""
        idle = self._idle.setdefault(conn.origin, [])
        if self.closed or len(idle) >= IDLE_PER_ORIGIN:
            conn.close()
            return
        conn.idle_since = conn.loop.time()
        idle.append(conn)
        if self._sweeper is None:
            self._sweeper = conn.loop.call_later(self.idle_s, self._sweep)

    async def close(self) -> None:
        """Close every kept connection; later requests are refused."""
        self.closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()

    def _reused(self, origin: Origin) -> Connection | None:
        idle = self._idle.get(origin)
        while idle:
            conn = idle.pop()
            if not conn.closed and conn.transport is not None and not conn.transport.is_closing():
                return conn
        return None

    async def _connect(self, upstream: str, origin: Origin, connect_s: float) -> Connection:
        loop = asyncio.get_running_loop()
        conn = Connection(self, origin, loop)
        tls = self._context() if origin.tls else None
        try:
            async with asyncio.timeout(connect_s):
                await loop.create_connection(lambda: conn, origin.host, origin.port, ssl=tls,
                                             server_hostname=origin.host if tls else None)
        except TimeoutError:
            raise UpstreamTimeout(upstream, "connect") from None
        except (OSError, ssl.SSLError) as exc:
            raise UpstreamUnavailable(upstream, type(exc).__name__) from None
        return conn

    def _context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context()
        return self._tls

    def _sweep(self) -> None:
        self._sweeper = None
        if self.closed:
            return
        kept = 0
        for origin, idle in list(self._idle.items()):
            alive = []
            for conn in idle:
                if conn.closed or conn.loop.time() - conn.idle_since >= self.idle_s:
                    conn.close()
                else:
                    alive.append(conn)
            self._idle[origin] = alive
            kept += len(alive)
        if kept:
            self._sweeper = asyncio.get_running_loop().call_later(self.idle_s, self._sweep)
