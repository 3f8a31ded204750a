"""One upstream answer as it arrives: httptools parses it, and every wait on it is bounded.

The head is read up to HEAD_BYTES; a body is buffered up to BUFFER_BYTES before the socket is paused, unless it
is read whole (its length already checked against the upstream's limit). A plain answer has one deadline; a
stream, once its head is in, a silence it may not pass between reads. Every failure is one of the gateway's
upstream errors, and closes the connection.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import httptools

from gateway.errors import (
    UpstreamCut,
    UpstreamError,
    UpstreamMalformed,
    UpstreamSilent,
    UpstreamTimeout,
    UpstreamUnavailable,
)

if TYPE_CHECKING:
    from gateway.upstreams.http.pool import Connection

HEAD_BYTES = 64 << 10  # the most of a status line and headers read before they end
BUFFER_BYTES = 1 << 18  # body bytes waiting unread at which the socket is paused
SILENCE_S = 1.0  # a close without an answer after this long is a silent upstream, not a refusal


class Unasked(Exception):
    """Bytes of a second answer after the first: the parser is stopped there."""


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
