"""Read an upstream's body within its limits: bytes off the wire, bytes once inflated, one stream event.

An upstream is not trusted with the gateway's memory: every piece handed on is at most one socket read
(or PIECE bytes of inflated data), a body is given up on as soon as it passes a limit, and gzip or
deflate is undone here in bounded steps, never by the HTTP client in one go.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator, Iterator

from gateway.errors import UpstreamMalformed, UpstreamTooLarge
from gateway.sse import EventBound, line_feeds
from gateway.upstreams.spec import Limits

PIECE = 1 << 16  # the most inflated bytes made from one call to the decompressor
ACCEPT_ENCODING = "gzip, deflate"
WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


class Inflater:
    """Undoes one content-encoding in pieces of at most PIECE bytes, failing once the total passes the limit."""

    def __init__(self, upstream: str, encoding: str, limit: int) -> None:
        self.upstream = upstream
        self.limit = limit
        self.total = 0
        name = encoding.strip().lower()
        if name not in WBITS:
            raise UpstreamMalformed(upstream, f"content-encoding '{name[:32]}' was not asked for")
        self._wbits = WBITS[name]
        self._zlib = zlib.decompressobj(self._wbits)
        self._started = False

    def feed(self, data: bytes) -> Iterator[bytes]:
        """The inflated pieces of data."""
        while data and not self._zlib.eof:
            try:
                piece = self._zlib.decompress(data, PIECE)
            except zlib.error as exc:
                if self._started or self._wbits != zlib.MAX_WBITS:
                    raise UpstreamMalformed(self.upstream, "broken compressed body") from exc
                self._wbits = -zlib.MAX_WBITS  # "deflate" sent raw, without its zlib header, as some servers do
                self._zlib = zlib.decompressobj(self._wbits)
                continue
            self._started = True
            self.total += len(piece)
            if self.total > self.limit:
                raise UpstreamTooLarge(self.upstream, "decompressed_body", self.limit)
            if piece:
                yield piece
            data = self._zlib.unconsumed_tail


async def wire_pieces(upstream: str, chunks: AsyncIterator[bytes], limit: int) -> AsyncIterator[bytes]:
    """chunks as they arrive, failing once their total passes limit."""
    total = 0
    async for chunk in chunks:
        total += len(chunk)
        if total > limit:
            raise UpstreamTooLarge(upstream, "body", limit)
        yield chunk


async def decoded(upstream: str, chunks: AsyncIterator[bytes], encoding: str | None,
                  limits: Limits) -> AsyncIterator[bytes]:
    """The body's bytes with its content-encoding undone, every limit on the way enforced."""
    wire = wire_pieces(upstream, chunks, limits.body_bytes)
    if encoding is None or is_plain(encoding):
        async for chunk in wire:
            yield chunk
        return
    inflater = Inflater(upstream, encoding, limits.decompressed_bytes)
    async for chunk in wire:
        for piece in inflater.feed(chunk):
            yield piece


class EventCutter:
    """Re-cuts a stream's body after each complete event, failing one that grows past its limit (or a plain body
    past body_bytes). Synchronous, so the reader of every stream read adds no generator of its own."""

    __slots__ = ("_body_bytes", "_bound", "_carry", "_event_bytes", "_total", "_wire", "upstream")

    def __init__(self, upstream: str, limits: Limits, wire: bool) -> None:
        self.upstream = upstream
        self._wire = wire  # whether pieces come off the wire (then the body limit is counted here)
        self._body_bytes = limits.body_bytes
        self._event_bytes = limits.sse_event_bytes
        self._bound = EventBound(limits.sse_event_bytes)
        self._total = 0
        self._carry = b""

    def feed(self, piece: bytes) -> bytes:
        """The complete events piece finishes (b"" for none yet)."""
        if self._wire:
            self._total += len(piece)
            if self._total > self._body_bytes:
                raise UpstreamTooLarge(self.upstream, "body", self._body_bytes)
        if self._carry or b"\r" in piece:
            piece, self._carry = line_feeds(self._carry + piece)
        complete = self._bound.feed(piece)
        if complete is None:
            raise UpstreamTooLarge(self.upstream, "event", self._event_bytes)
        return complete

    def rest(self) -> bytes:
        """What the stream left unfinished when it ended."""
        if self._carry:
            return (self._bound.feed(b"\n") or b"") + self._bound.rest()
        return self._bound.rest()


def is_plain(encoding: str | None) -> bool:
    """Whether a content-encoding leaves the body as sent."""
    return not encoding or encoding.strip().lower() == "identity"


async def events(upstream: str, chunks: AsyncIterator[bytes], encoding: str | None,
                 limits: Limits) -> AsyncIterator[bytes]:
    """A stream's body re-cut after each complete event, failing an event that grows past its limit."""
    plain = is_plain(encoding)
    cutter = EventCutter(upstream, limits, wire=plain)
    async for piece in chunks if plain else decoded(upstream, chunks, encoding, limits):
        complete = cutter.feed(piece)
        if complete:
            yield complete
    rest = cutter.rest()
    if rest:
        yield rest


async def whole(pieces: AsyncIterator[bytes]) -> bytes:
    """Every piece, joined."""
    return b"".join([piece async for piece in pieces])


async def prefix(pieces: AsyncIterator[bytes], limit: int) -> tuple[bytes, bool]:
    """At most limit bytes of pieces, and whether there was more (then the rest is never read)."""
    kept: list[bytes] = []
    size = 0
    async for piece in pieces:
        kept.append(piece[:limit - size])
        size += len(kept[-1])
        if size >= limit:
            return b"".join(kept), True
    return b"".join(kept), False
