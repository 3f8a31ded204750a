"""One upstream answer as it arrives: httptools parses it, and every wait on it is bounded.

The head is read up to HEAD_BYTES; a body is buffered up to BUFFER_BYTES before the socket is paused, unless it
is read whole (its length already checked against the upstream's limit). A plain answer has one deadline; a
stream, once its head is in, a silence it may not pass between reads. Every failure is one of the gateway's
upstream errors, and closes the connection.
"""

from __future__ import annotations

import asyncio
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
PIECES = 64  # body pieces kept as they came; past this many they are gathered into one (a flood of tiny chunks)
SILENCE_S = 1.0  # a close without an answer after this long is a silent upstream, not a refusal


class Stop(Exception):
    """Raised in a parser callback to stop parsing: the answer is failed, or whole and followed by more."""


class Response:
    """One answer in progress: its status and headers once the head is in, then its body as it arrives."""

    __slots__ = ("_buffered", "_chunks", "_conn", "_error", "_framed", "_idle", "_informational", "_last",
                 "_overhead", "_parser", "_pile", "_released", "_started", "_timer", "_waiter", "_whole", "complete",
                 "headers", "keep_alive", "status", "upstream")

    def __init__(self, upstream: str, conn: Connection, deadline: float) -> None:
        self.upstream = upstream
        self.status = 0
        self.headers: dict[str, str] = {}
        self.complete = False
        self.keep_alive = False
        self._conn = conn
        self._parser = httptools.HttpResponseParser(self)
        self._chunks: list[bytes] = []
        self._pile: bytearray | None = None  # the unread body, once it came in more than PIECES pieces
        self._buffered = 0
        self._overhead = 0  # bytes read since the last body byte: a head, chunk headers, trailers
        self._framed = False  # a length or chunked framing was announced: EOF before the end is a cut
        self._informational = False
        self._error: UpstreamError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._released = False
        self._whole = False  # read whole: the socket is never paused for it
        self._idle: float | None = None
        self._started = conn.loop.time()
        self._last = 0.0
        self._timer: asyncio.TimerHandle | None = conn.loop.call_at(deadline, self._expire)

    # The parser's callbacks.
    def on_message_begin(self) -> None:
        if self.complete:  # a second answer to one request: never read, and the connection not trusted again
            self.keep_alive = False
            raise Stop

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        if key in ("content-length", "transfer-encoding"):
            self._framed = True
        self.headers[key] = f"{self.headers[key]}, {text}" if key in self.headers else text

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 100:  # "000" would pass for no head at all
            self.fail(UpstreamMalformed(self.upstream, f"the answer's status {status:03d} is not one"))
            raise Stop
        if status < 200:  # an interim answer (103 Early Hints): the real one follows
            self._informational = True
            self.headers = {}
            self._framed = False
            return
        self.status = status
        if status in (204, 304):
            self._framed = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self._overhead = 0
        self._buffered += len(body)
        if self._pile is not None:
            self._pile += body
        else:
            self._chunks.append(body)
            if len(self._chunks) > PIECES:  # one bytes object a byte would hold 30 times what the byte does
                self._pile = bytearray().join(self._chunks)
                self._chunks.clear()
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
        """Parse bytes off the socket; too much that is not body, or bytes that are not HTTP, fail the answer."""
        if self.complete or self._error is not None:
            self.keep_alive = False  # bytes after the answer: the connection is not trusted again
            return
        self._overhead += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError:
            pass  # a callback stopped the parser (Stop): it failed the answer, or the answer was whole
        except httptools.HttpParserUpgrade:
            self.fail(UpstreamMalformed(self.upstream, "the answer asked to switch protocols"))
        except httptools.HttpParserError as exc:
            broken = UpstreamCut if self.status else UpstreamUnavailable
            self.fail(broken(self.upstream, f"not HTTP: {str(exc)[:80]}"))
        if self._overhead > HEAD_BYTES and not self.complete:
            what = "chunk headers or trailers" if self.status else "head"
            self.fail(UpstreamMalformed(self.upstream, f"the answer's {what} ran over {HEAD_BYTES} bytes"))
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
        elif self._conn.loop.time() - self._started >= SILENCE_S:
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
        while not self._buffered:
            if self.complete:
                return b""
            await self._wait()
        data = self._take()
        self._conn.resume()
        return data

    async def read(self) -> bytes:
        """The whole body (its length was checked by the caller)."""
        self._whole = True
        self._conn.resume()
        while not self.complete:
            await self._wait()
        return self._take()

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

    def _take(self) -> bytes:
        """The unread body, now read."""
        chunks, pile = self._chunks, self._pile
        if pile is not None:
            data, self._pile = bytes(pile), None
        else:
            data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            chunks.clear()
        self._buffered = 0
        return data

    def _finished(self) -> None:
        self.complete = True
        self._cancel_timer()
        if self._conn.writing:  # answered before the request was all written: the rest is never sent
            self.keep_alive = False
            self._conn.close()
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
            if self._conn.paused:  # the reader is behind, not the upstream: its silence starts when reading does
                self._last = self._conn.loop.time()
            due = self._last + self._idle
            if due > self._conn.loop.time():
                self._timer = self._conn.loop.call_at(due, self._expire)
                return
        self.fail(UpstreamTimeout(self.upstream))

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
