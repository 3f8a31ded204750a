"""The process's upstream connections: kept alive per origin, one answer at a time on each.

A connection goes back to the pool only when its answer was read whole, asked to be kept, and nothing came after
it; an unused one is closed after IDLE_S. TLS is verified against the system's CAs (SSL_CERT_FILE and SSL_CERT_DIR
name others) unless the pool is given a context of its own.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from typing import cast

from gateway.errors import UpstreamTimeout, UpstreamUnavailable
from gateway.upstreams.http.response import Response
from gateway.upstreams.http.wire import Origin, head_bytes

IDLE_S = 15.0  # how long a connection is kept unused before it is closed
IDLE_PER_ORIGIN = 512  # connections kept unused for one origin; more are closed


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
        self.paused = False  # reading stopped until the answer's reader catches up
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
        self.pool.open.discard(self)
        if self.response is not None:
            self.response.lost(exc)
        self.resume_writing()  # a send waiting to write the rest ends: there is no rest

    def pause_writing(self) -> None:
        self._drained = self.loop.create_future()

    def resume_writing(self) -> None:
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        self._drained = None

    @property
    def writing(self) -> bool:
        """Whether some of the request is still unsent."""
        return self.transport is not None and self.transport.get_write_buffer_size() > 0

    def pause(self) -> None:
        """Stop reading the socket until the body's reader catches up."""
        if not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        """Read the socket again."""
        if self.paused and self.transport is not None and not self.closed:
            self.paused = False
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
                await self._drained  # ends when the upstream reads, the answer comes early, or the try fails
            except BaseException:
                self.close()
                raise
        return response

    def idle(self) -> None:
        """The answer was read whole: back to the pool."""
        self.response = None
        if self.closed or self.writing:
            self.close()
            return
        self.resume()
        self.pool.put(self)

    def close(self) -> None:
        """Close the connection at once: nothing still unsent is wanted (an upstream that stopped reading would
        otherwise keep it open)."""
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class Pool:
    """The process's upstream connections, kept alive per origin; closed once, by the serving layer."""

    def __init__(self, idle_s: float = IDLE_S, tls: ssl.SSLContext | None = None) -> None:
        self.idle_s = idle_s
        self._idle: dict[Origin, list[Connection]] = {}
        self.open: set[Connection] = set()  # every connection not yet lost, in use or not
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
        """Close every connection, and refuse later requests; an answer still being read fails as cut."""
        self.closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for conn in list(self.open):
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
        if self.closed:  # closed while this one was connecting
            conn.close()
            raise UpstreamUnavailable(upstream, "the gateway is shutting down")
        self.open.add(conn)
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
