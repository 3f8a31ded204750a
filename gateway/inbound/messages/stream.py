"""One Messages API stream relayed to its client: whole events as they arrive, its usage noted, its end checked.

Both kinds of upstream hand the pipeline Messages events (a pass-through one its own bytes, a translated one
what gateway/inbound/messages/events.py made), so one relay serves both. A stream is finished by its
`message_stop`; one that breaks first, or says `error` itself, ends with an `error` event, never as a success.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from gateway.accounting.usage import Usage, token_count
from gateway.asgi import Send
from gateway.errors import UpstreamCut, UpstreamError, UpstreamIncomplete, UpstreamMalformed, UpstreamTimeout
from gateway.sse import complete_end, payload_of
from gateway.state.base import MOST
from gateway.upstreams.base import Exchange

NOTED = (b"event: message_", b"event: error", b'"type":"message_', b'"type": "message_', b'"type":"error"')
DELTA_LINE = b"event: content_block_delta\n"  # a JSON string holds no raw newline, so only an event line matches
USAGE_KEYS = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")


@dataclass
class MessagesRelay:
    """Cuts a Messages stream after whole events and reads the few that say how it went."""

    usage: dict[str, Any] = field(default_factory=dict)  # the counts, and the writes by how long they are kept
    started: bool = False  # message_start arrived
    stopped: bool = False  # message_stop arrived
    counted: bool = False  # a message_delta said how many tokens were made, as a count the gateway can read
    deltas: int = 0  # content_block_delta events: each carries at least one generated token
    error: dict[str, Any] | None = None  # the stream's own error event, if it sent one
    _pending: bytes = b""

    def feed(self, chunk: bytes) -> bytes:
        """The complete events chunk finishes; the rest waits for more bytes."""
        data = self._pending + chunk if self._pending else chunk
        end = complete_end(data)
        if end < 0:
            self._pending = data
            return b""
        complete, self._pending = data[:end], data[end:]
        self.deltas += complete.count(DELTA_LINE)
        if any(marker in complete for marker in NOTED):
            for raw in complete.split(b"\n\n")[:-1]:
                if not raw.startswith(DELTA_LINE):  # content deltas, most of a read, say nothing noted here
                    self._note(raw)
        return complete

    def _note(self, raw: bytes) -> None:
        payload = payload_of(raw)
        kind = payload.get("type") if isinstance(payload, dict) else None
        if kind == "message_start" and isinstance(payload.get("message"), dict):
            self.started = True
            self._add_usage(payload["message"].get("usage"))
        elif kind == "message_delta":
            self._add_usage(payload.get("usage"))
            output = payload.get("usage", {}).get("output_tokens") if isinstance(payload.get("usage"), dict) else None
            self.counted = isinstance(output, int) and not isinstance(output, bool) and output >= 0
        elif kind == "message_stop":
            self.stopped = True
        elif kind == "error":
            error = payload.get("error")
            self.error = error if isinstance(error, dict) else {"type": "api_error", "message": str(error)}

    def _add_usage(self, usage: Any) -> None:
        """Usage counts as they arrive: message_start's, then message_delta's cumulative ones over them."""
        if isinstance(usage, dict):
            for key in USAGE_KEYS:
                value = usage.get(key)
                if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                    self.usage[key] = value
            parts = usage.get("cache_creation")
            if isinstance(parts, dict):
                self.usage["cache_creation"] = parts

    def tokens(self) -> Usage:
        """What the stream used, as the gateway counts it: every input token, cached or not, as prompt."""
        return of_messages(self.usage)


def of_messages(usage: Any) -> Usage:
    """A Messages API usage object as the gateway's: input, cache writes and cache reads are all prompt tokens,
    the cache ones also apart."""
    if not isinstance(usage, dict):
        return Usage()
    read = token_count(usage.get("cache_read_input_tokens"))
    written = token_count(usage.get("cache_creation_input_tokens"))
    prompt = token_count(usage.get("input_tokens")) + read + written
    parts = usage.get("cache_creation")  # the writes by how long they are kept: 5 minutes or an hour
    hour = token_count(parts.get("ephemeral_1h_input_tokens")) if isinstance(parts, dict) else 0
    return Usage.parted(prompt if prompt <= MOST else MOST, token_count(usage.get("output_tokens")), read, written,
                        hour)


@dataclass
class Opened:
    """A Messages stream whose first events arrived: ready to go out."""

    exchange: Exchange
    chunks: AsyncIterator[bytes]
    relay: MessagesRelay
    first: bytes


async def open_stream(exchange: Exchange, ttft_timeout_s: float) -> Opened:
    """Wait for the first complete events; a stream that fails before then, opens with an error or opens with
    anything but message_start falls back."""
    relay = MessagesRelay()
    chunks = exchange.chunks()
    try:
        async with asyncio.timeout(ttft_timeout_s):
            async for chunk in chunks:
                first = relay.feed(chunk)
                if relay.error is not None:
                    raise UpstreamCut(exchange.upstream, f"error event: {relay.error.get('type')}")
                if first and not relay.started:  # another API's stream, or garbage: nothing has gone out yet
                    raise UpstreamMalformed(exchange.upstream, "the stream does not open with message_start")
                if first:
                    return Opened(exchange, chunks, relay, first)
    except TimeoutError:
        exchange.close()
        raise UpstreamTimeout(exchange.upstream, "no first event in time") from None
    except BaseException:
        exchange.close()
        raise
    exchange.close()
    raise UpstreamIncomplete(exchange.upstream, "stream ended before any event")


async def relay(opened: Opened, send: Send) -> UpstreamError | None:
    """Forward the first events and the rest until message_stop; what cut the stream, if something did."""
    relay_ = opened.relay
    try:
        await send({"type": "http.response.body", "body": opened.first, "more_body": True})
        if relay_.stopped:
            return None
        async for chunk in opened.chunks:
            out = relay_.feed(chunk)
            if out:
                await send({"type": "http.response.body", "body": out, "more_body": True})
            if relay_.stopped or relay_.error is not None:
                break
    except UpstreamError as exc:
        return None if relay_.stopped else exc
    finally:
        opened.exchange.close()
    if relay_.error is not None:
        return UpstreamCut(opened.exchange.upstream, f"error event: {relay_.error.get('type')}")
    return None if relay_.stopped else UpstreamIncomplete(opened.exchange.upstream, "ended without message_stop")
