"""One client stream across upstream parts: forward events, and continue an answer cut short elsewhere.

A stream that breaks after bytes went out is never ended as if complete. When an upstream that declares
`continuation` can take over, it gets the exact text already sent as a final assistant message and only
the rest is streamed on; otherwise the client gets one in-band error event and no [DONE].
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.accounting import Usage
from gateway.asgi import Send
from gateway.dispatch import Request
from gateway.errors import UpstreamError, UpstreamTimeout, UpstreamUnavailable
from gateway.metrics import Metrics
from gateway.policy.schema import Resilience
from gateway.sse import DONE_EVENT, SseRelay, Transcript, error_event, usage_event
from gateway.upstreams.base import Client, Exchange

FINISH_GRACE_S = 1.0


@dataclass
class Opened:
    """A stream whose first events arrived: ready to go out."""

    upstream: Client
    exchange: Exchange
    chunks: AsyncIterator[bytes]
    relay: SseRelay
    first: bytes
    events_before: int = 0


async def open_stream(upstream: Client, exchange: Exchange, relay: SseRelay, ttft_timeout_s: float) -> Opened:
    """Wait for the first complete events; a stream that fails before then can still fall back."""
    chunks = exchange.chunks()
    before = relay.transcript.events if relay.transcript is not None else 0
    try:
        async with asyncio.timeout(ttft_timeout_s):
            async for chunk in chunks:
                first = relay.feed(chunk)
                if first:
                    return Opened(upstream, exchange, chunks, relay, first, before)
    except TimeoutError:
        exchange.close()
        raise UpstreamTimeout(exchange.upstream, "no first event in time") from None
    except BaseException:
        exchange.close()
        raise
    exchange.close()
    raise UpstreamUnavailable(exchange.upstream, "stream ended before any event")


def continuation_body(body: Mapping[str, Any], sent: Transcript) -> dict[str, Any]:
    """The request that asks for the rest of an answer: the text sent so far as a final assistant message."""
    messages = [*body["messages"], {"role": "assistant", "content": sent.text}]
    rest = {**body, "messages": messages, "continue_final_message": True, "add_generation_prompt": False}
    for limit in ("max_tokens", "max_completion_tokens"):
        if isinstance(rest.get(limit), int):
            rest[limit] = max(1, rest[limit] - sent.events)
    return rest


def can_continue(request: Request, upstreams: Sequence[Client]) -> bool:
    """Whether a cut of this stream could be continued: a single chat choice, and an upstream able to."""
    return (request.path == "/chat/completions" and request.body.get("n", 1) in (1, None)
            and any("continuation" in u.spec.capabilities for u in upstreams))


class Stream:
    """Relays one client stream, part after part, and remembers what each part used."""

    def __init__(self, metrics: Metrics, request: Request, resilience: Resilience, send: Send,
                 candidates: Sequence[Client], prompt_tokens: int) -> None:
        self.metrics = metrics
        self.request = request
        self.resilience = resilience
        self.send = send
        self.candidates = candidates
        self.prompt_tokens = prompt_tokens
        self.parts: list[tuple[str, Usage]] = []
        self._deadline = time.monotonic() + resilience.deadline_s

    async def run(self, opened: Opened) -> bytes:
        """Forward every part; return the bytes that end the stream honestly."""
        current: Opened | None = opened
        while current is not None:
            try:
                failure = await self._pump(current)
            finally:
                self.parts.append((current.upstream.name, self._usage(current)))
            if failure is None:
                return self._ending(current.relay, current.upstream)
            current = await self._continue(current, failure)
        return error_event("the upstream stream broke off and could not be continued; the answer is incomplete",
                           "stream_interrupted")

    async def _pump(self, opened: Opened) -> UpstreamError | None:
        """Forward events until the upstream ends; the error that cut it, if one did."""
        relay, send = opened.relay, self.send
        try:
            if relay.finished and not relay.done:
                return await self._drain_after_finish(opened)
            async for chunk in opened.chunks:
                out = relay.feed(chunk)
                if out:
                    await send({"type": "http.response.body", "body": out, "more_body": True})
                if relay.finished and not relay.done:
                    return await self._drain_after_finish(opened)
        except UpstreamError as exc:
            return None if relay.finished else exc
        finally:
            opened.exchange.close()
            if relay.dropped:
                self.metrics.count(self.metrics.upstream_errors, opened.upstream.name, "malformed_event",
                                   amount=relay.dropped)
                relay.dropped = 0
        if relay.done or relay.finished:
            return None
        return UpstreamUnavailable(opened.upstream.name, "ended without finishing")

    async def _drain_after_finish(self, opened: Opened) -> UpstreamError | None:
        """After a finish_reason, wait only briefly for the usage event and [DONE] before closing."""
        relay = opened.relay
        while not relay.done:
            try:
                chunk = await asyncio.wait_for(anext(opened.chunks), FINISH_GRACE_S)
            except (TimeoutError, StopAsyncIteration, UpstreamError):
                return None
            out = relay.feed(chunk)
            if out:
                await self.send({"type": "http.response.body", "body": out, "more_body": True})
        return None

    async def _continue(self, cut: Opened, failure: UpstreamError) -> Opened | None:
        """Ask the same upstream, then the other candidates that declare continuation, for the rest."""
        transcript = cut.relay.transcript
        reason = failure.reason
        if transcript is None or not transcript.continuable:
            self.metrics.count(self.metrics.stream_failures, cut.upstream.name, reason, "error_event")
            return None
        order = [cut.upstream, *(u for u in self.candidates if u is not cut.upstream)]
        body = continuation_body(self.request.body, transcript)
        for upstream in order:
            if "continuation" not in upstream.spec.capabilities or time.monotonic() >= self._deadline:
                continue
            relay = SseRelay(strip_usage=True, transcript=transcript, continuing=True)
            try:
                exchange = await upstream.send(self.request.path, upstream.encode(body, True), self.request.headers,
                                               True)
                opened = await open_stream(upstream, exchange, relay, self.resilience.ttft_timeout_s)
            except UpstreamError as exc:
                self.metrics.count(self.metrics.upstream_errors, upstream.name, "continuation_" + exc.reason)
                continue
            self.metrics.count(self.metrics.stream_failures, cut.upstream.name, reason, "continued")
            await self.send({"type": "http.response.body", "body": opened.first, "more_body": True})
            return opened
        self.metrics.count(self.metrics.stream_failures, cut.upstream.name, reason, "error_event")
        return None

    def _ending(self, relay: SseRelay, upstream: Client) -> bytes:
        """[DONE]; for an answer that came in parts, the summed usage first when the client asked for it."""
        if len(self.parts) == 1:
            return b"" if relay.done else DONE_EVENT
        if not wants_usage(self.request.body):
            return DONE_EVENT
        total = self.total_usage()
        usage = {"prompt_tokens": total.prompt_tokens, "completion_tokens": total.completion_tokens,
                 "total_tokens": total.prompt_tokens + total.completion_tokens}
        return usage_event({"object": "chat.completion.chunk", "model": upstream.spec.model}, usage) + DONE_EVENT

    def _usage(self, opened: Opened) -> Usage:
        """What a part used: as the upstream reported it, or estimated when it was cut before saying."""
        if opened.relay.usage is not None:
            return Usage.of(opened.relay.usage)
        transcript = opened.relay.transcript
        return Usage(self.prompt_tokens, transcript.events - opened.events_before if transcript else 0)

    def total_usage(self) -> Usage:
        """The sum over every part."""
        return Usage(sum(u.prompt_tokens for _, u in self.parts), sum(u.completion_tokens for _, u in self.parts))


def wants_usage(body: Mapping[str, Any]) -> bool:
    """Whether the client asked for a usage event at the end of its stream."""
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True
