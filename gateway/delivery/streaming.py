"""One client stream across upstream parts: forward events, and continue an answer cut short elsewhere.

A stream that breaks after bytes went out is never ended as if complete. When an upstream that declares
`continuation` can take over, it gets the exact text already sent as a final assistant message and only
the rest is streamed on; otherwise the client gets one in-band error event and no [DONE]. A continued
answer reads as one completion (one id, created and model), and it ends by the request's deadline.
Continuation attempts go through the dispatcher's fallback loop like the first ones (gateway/delivery/dispatch.py).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.accounting.meter import TEXT_KEYS, TextMeter
from gateway.accounting.usage import Usage
from gateway.asgi import Send
from gateway.delivery.chunks import carried, carry, identity_of, restamp
from gateway.delivery.dispatch import Accept, Request, Resume, Tries
from gateway.delivery.relay import SseRelay, Transcript
from gateway.errors import UpstreamError, UpstreamIncomplete, UpstreamSilent, UpstreamTimeout
from gateway.operations.metrics import Metrics
from gateway.routing.policy.schema import Resilience
from gateway.sse import DONE_EVENT, error_event, response_failed, usage_event
from gateway.upstreams.base import Client, Exchange

FINISH_GRACE_S = 1.0
STALL_S = 1.0  # a part that breaks after this long without a byte stalled first, even if it then closed
INTERRUPTED = "the upstream stream broke off and could not be continued; the answer is incomplete"
SHUTTING_DOWN = "the gateway is shutting down and ended this stream; the answer is incomplete"


@dataclass
class Opened:
    """A stream whose first events arrived: ready to go out."""

    upstream: Client
    exchange: Exchange
    chunks: AsyncIterator[bytes]
    relay: SseRelay
    first: bytes


async def open_stream(upstream: Client, exchange: Exchange, relay: SseRelay, ttft_timeout_s: float) -> Opened:
    """Wait for the first event with data (comments before it come along); a stream that fails before then can
    still fall back."""
    chunks = exchange.chunks()
    first = b""
    try:
        async with asyncio.timeout(ttft_timeout_s):
            async for chunk in chunks:
                first += relay.feed(chunk)
                if relay.carried:
                    return Opened(upstream, exchange, chunks, relay, first)
    except TimeoutError:
        exchange.close()
        raise UpstreamTimeout(exchange.upstream, "no first event in time") from None
    except BaseException:
        exchange.close()
        raise
    exchange.close()
    raise UpstreamIncomplete(exchange.upstream, "stream ended before any event")


def continuation_body(body: Mapping[str, Any], sent: Transcript, generated: int) -> dict[str, Any]:
    """The request that asks for the rest of an answer: the text sent so far as a final assistant message."""
    messages = [*body["messages"], {"role": "assistant", "content": sent.text}]
    rest = {**body, "messages": messages, "continue_final_message": True, "add_generation_prompt": False}
    for limit in ("max_tokens", "max_completion_tokens"):
        if isinstance(rest.get(limit), int):
            rest[limit] = max(1, rest[limit] - generated)
    return rest


def can_continue(request: Request, upstreams: Sequence[Client]) -> bool:
    """Whether a cut of this stream could be continued: a single chat choice, and an upstream able to."""
    return (request.path == "/chat/completions" and request.body.get("n", 1) in (1, None)
            and any("continuation" in u.spec.capabilities for u in upstreams))


def stalled(failure: UpstreamError) -> bool:
    """Whether a part broke by going quiet (a stall past the idle timeout, a silent close), not by a cut."""
    return isinstance(failure, UpstreamTimeout | UpstreamSilent)


def _heard(quiet: asyncio.Timeout, idle_s: float) -> None:
    """An event with data came: the idle timer runs again, for at least idle_s (moved only every idle_s / 4, so
    that most events cost nothing)."""
    now = asyncio.get_running_loop().time()
    when = quiet.when()
    if when is None or when - now < idle_s:
        quiet.reschedule(now + idle_s * 1.25)


def _after_silence(failure: UpstreamError, silent_s: float) -> UpstreamError:
    """failure, or a silent close when the part went quiet for STALL_S before it broke off (a stall then a close)."""
    if silent_s < STALL_S or stalled(failure):
        return failure
    return UpstreamSilent(failure.upstream, f"closed after {silent_s:.1f} s without a byte")


class Stream:
    """Relays one client stream, part after part, and remembers what each part used."""

    def __init__(self, metrics: Metrics, request: Request, resilience: Resilience, send: Send,
                 candidates: Sequence[Client], prompt_tokens: int, resume: Resume, idle_s: float | None = None) -> None:
        self.metrics = metrics
        self.request = request
        self.resilience = resilience
        self.send = send
        self.candidates = candidates
        self.prompt_tokens = prompt_tokens
        self.resume = resume
        self.deadline = resume.record.deadline(resilience)  # the request's: a continued stream must end by it
        self.idle_s = resilience.stream_idle_timeout_s if idle_s is None else idle_s  # between events with data
        self.parts: list[tuple[str, Usage]] = []
        self.generated = 0  # over the parts done
        self._keys = TEXT_KEYS.get(request.path, ())
        self._carry = not wants_usage(request.body)  # the client gets no usage event: carry what else it held
        self._identity: dict[str, Any] = {}
        self._fingerprint: str | None = None
        self._held = b""
        self._stalled: set[str] = set()
        self._current: Opened | None = None
        self._meter = TextMeter(self._keys)  # the text the current part relayed
        self._responses = request.path == "/responses"  # which API's shape a failure event takes
        self._first = self._last = b""  # for the Responses API: the first events and the last chunk sent
        self.interrupted = False  # whether the stream ended in a failure event

    async def run(self, opened: Opened) -> bytes:
        """Forward every part, the first events included; return the bytes that end the stream honestly."""
        if opened.relay.transcript is not None:
            self._identity = identity_of(opened.first)
            self._fingerprint = self._identity.get("system_fingerprint")
        if self._responses:
            self._first = opened.first
        current: Opened | None = opened
        while current is not None:
            self._current, self._meter = current, TextMeter(self._keys)
            try:
                failure = await self._pump(current)
            finally:
                self._part_done(current)
                self.resume.record.finish()  # the part's upstream slot: a continuation may need it
            if failure is None:
                return self._ending(current.relay)
            current = await self._continue(current, failure)
        return self._failed(INTERRUPTED)

    def shut_down(self) -> bytes:
        """The ending of a stream the server cut while it ran (a drain that ran out): one error event."""
        name = self._current.upstream.name if self._current is not None else "-"
        self.metrics.count(self.metrics.stream_failures, name, "shutdown", "error_event")
        return self._failed(SHUTTING_DOWN)

    def _failed(self, message: str) -> bytes:
        """The event that ends a stream which cannot be finished, in its API's shape."""
        self.interrupted = True
        if self._responses:
            return response_failed(self._first, self._last, message)
        return error_event(message, "stream_interrupted")

    def _part_done(self, part: Opened) -> None:
        usage = self._usage(part)
        self.parts.append((part.upstream.name, usage))
        self.generated += usage.completion_tokens

    async def _pump(self, opened: Opened) -> UpstreamError | None:
        """Relay one part; a continued part only until the request's deadline."""
        if not opened.relay.continuing:
            return await self._relay(opened)
        try:
            async with asyncio.timeout(max(0.0, self.deadline - time.monotonic())):
                return await self._relay(opened)
        except TimeoutError:
            if opened.relay.finished:
                await self._flush()
                return None
            return UpstreamTimeout(opened.upstream.name, "deadline passed")

    async def _relay(self, opened: Opened) -> UpstreamError | None:
        """Forward the first events and the rest until the upstream ends; the error that cut it, if one did."""
        relay, now = opened.relay, time.monotonic
        last = now()
        quiet = asyncio.timeout(None)  # the idle timeout, counting only events that carry data
        try:
            await self._send(relay, opened.first)
            if relay.finished and not relay.done:
                return await self._drain_after_finish(opened)
            async with quiet:
                _heard(quiet, self.idle_s)
                async for chunk in opened.chunks:
                    last = now()
                    await self._send(relay, relay.feed(chunk))
                    if relay.finished and not relay.done:
                        quiet.reschedule(None)
                        return await self._drain_after_finish(opened)
                    if relay.carried:
                        _heard(quiet, self.idle_s)
        except TimeoutError:
            if not quiet.expired():
                raise
            return UpstreamTimeout(opened.upstream.name, f"no event with data for {self.idle_s:g} s")
        except UpstreamError as exc:
            return None if relay.finished else _after_silence(exc, now() - last)
        finally:
            opened.exchange.close()
            if relay.dropped:
                self.metrics.count(self.metrics.upstream_errors, opened.upstream.name, "malformed_event",
                                   amount=relay.dropped)
                relay.dropped = 0
        if relay.done or relay.finished:
            return None
        return _after_silence(UpstreamIncomplete(opened.upstream.name, "ended without finishing"), now() - last)

    async def _drain_after_finish(self, opened: Opened) -> UpstreamError | None:
        """After a finish_reason, wait only briefly (FINISH_GRACE_S after the last data) for the usage event and
        [DONE] before closing."""
        relay, clock = opened.relay, asyncio.get_running_loop().time
        until = clock() + FINISH_GRACE_S
        while not relay.done:
            try:
                chunk = await asyncio.wait_for(anext(opened.chunks), until - clock())
            except (TimeoutError, StopAsyncIteration, UpstreamError):
                break
            await self._send(relay, relay.feed(chunk))
            if relay.carried:
                until = clock() + FINISH_GRACE_S
        await self._flush()
        return None

    async def _send(self, relay: SseRelay, events: bytes) -> None:
        """Send what of events the client is to get now."""
        out = self._outgoing(relay, events)
        if out:
            await self.send({"type": "http.response.body", "body": out, "more_body": True})

    def _outgoing(self, relay: SseRelay, out: bytes) -> bytes:
        """What to send of events the relay passed: counted, and as _finishing makes them near the end."""
        if out:
            self._meter.add(out)
            if self._responses:
                self._last = out
        if relay.finished or relay.continuing or self._held or relay.stripped is not None:
            return self._finishing(relay, out)
        return out

    def _finishing(self, relay: SseRelay, out: bytes) -> bytes:
        """Events stamped as the first part's, with a stripped usage event's extras carried onto finish_reason.

        While the client is owed the extras of a usage event still to come, the finishing events wait for it
        (or for [DONE], or the end of the grace after finish_reason): b"" to send for now.
        """
        if relay.continuing and self._identity:
            out = restamp(out, self._identity)
        if relay.stripped is not None:
            out, self._held = self._carry_stripped(relay, self._held + out), b""
        elif self._carry and relay.finished and relay.usage is None and not relay.done:
            self._held += out
            return b""
        elif self._held:
            out, self._held = self._held + out, b""
        return out

    def _carry_stripped(self, relay: SseRelay, out: bytes) -> bytes:
        stripped, relay.stripped = relay.stripped or {}, None
        fingerprint = stripped.get("system_fingerprint")
        if self._fingerprint is None and isinstance(fingerprint, str):
            self._fingerprint = fingerprint
        return carry(out, carried(stripped)) if self._carry else out

    async def _flush(self) -> None:
        """Send the finishing events that waited for a usage event that did not come."""
        if self._held:
            out, self._held = self._held, b""
            await self.send({"type": "http.response.body", "body": out, "more_body": True})

    async def _continue(self, cut: Opened, failure: UpstreamError) -> Opened | None:
        """Ask the candidates that declare continuation for the rest, through the dispatcher's fallback loop and
        within the request's deadline; None when none can."""
        transcript = cut.relay.transcript
        continuers = self._continuers(cut.upstream, failure)
        if transcript is not None and transcript.continuable and continuers and time.monotonic() < self.deadline:
            body = continuation_body(self.request.body, transcript, self.generated)
            request = Request(self.request.path, body, self.request.headers, True)
            tries = Tries(self.resume.route, continuers, self.resilience, request, self.deadline, resumed=True)
            found = await self.resume.dispatcher.resume(tries, self._rest_of(transcript, continuers),
                                                        self.resume.record)
            if found is not None:
                self.metrics.count(self.metrics.stream_failures, cut.upstream.name, failure.reason, "continued")
                return found[1]
        self.metrics.count(self.metrics.stream_failures, cut.upstream.name, failure.reason, "error_event")
        return None

    def _continuers(self, cut: Client, failure: UpstreamError) -> list[Client]:
        """Who may take the rest, in order: after a cut the same upstream first, and every upstream that stalled
        in this request last."""
        if stalled(failure):
            self._stalled.add(cut.name)
        order = sorted([cut, *(u for u in self.candidates if u is not cut)], key=lambda u: u.name in self._stalled)
        return [u for u in order if "continuation" in u.spec.capabilities]

    def _rest_of(self, transcript: Transcript, continuers: Sequence[Client]) -> Accept[Opened]:
        """What takes a continuation's response: its first events, inside the time the deadline leaves."""
        by_name = {u.name: u for u in continuers}

        async def first_events(exchange: Exchange) -> Opened:
            relay = SseRelay(strip_usage=True, transcript=transcript, continuing=True)
            left = self.deadline - time.monotonic()
            return await open_stream(by_name[exchange.upstream], exchange, relay,
                                     min(self.resilience.ttft_timeout_s, left))

        return first_events

    def _ending(self, relay: SseRelay) -> bytes:
        """[DONE]; for an answer that came in parts, the summed usage first when the client asked for it."""
        if len(self.parts) == 1:
            return b"" if relay.done else DONE_EVENT
        if not wants_usage(self.request.body):
            return DONE_EVENT
        total = self.total_usage()
        usage = {"prompt_tokens": total.prompt_tokens, "completion_tokens": total.completion_tokens,
                 "total_tokens": total.prompt_tokens + total.completion_tokens}
        return usage_event(self._usage_template(), usage) + DONE_EVENT

    def _usage_template(self) -> dict[str, Any]:
        """The chunk fields of the summed usage event: the first part's identity, a fingerprint where one came."""
        template = {"id": self._identity.get("id") or f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion.chunk",
                    "created": self._identity.get("created", int(time.time())),
                    "model": self._identity.get("model") or str(self.request.body.get("model"))}
        if self._fingerprint is not None:
            template["system_fingerprint"] = self._fingerprint
        return template

    def _usage(self, opened: Opened) -> Usage:
        """What a part used: as the upstream reported it, or estimated from the text it relayed when it was cut
        before saying (its prompt: the request's and the text sent before it)."""
        if opened.relay.usage is not None:
            return Usage.of(opened.relay.usage)
        generated = self._meter.tokens
        cap = completion_cap(self.request.body)
        return Usage(self.prompt_tokens + self.generated,
                     generated if cap is None else min(generated, max(0, cap - self.generated)))

    def total_usage(self) -> Usage:
        """The sum over every part."""
        return Usage(sum(u.prompt_tokens for _, u in self.parts), sum(u.completion_tokens for _, u in self.parts))


def completion_cap(body: Mapping[str, Any]) -> int | None:
    """The most completion tokens the request lets the upstream generate, when it says (times its choices)."""
    limit = next((v for k in ("max_completion_tokens", "max_tokens", "max_output_tokens")
                  if isinstance(v := body.get(k), int) and not isinstance(v, bool) and v > 0), None)
    choices = body.get("n")
    return None if limit is None else limit * (choices if isinstance(choices, int) and choices > 1 else 1)


def wants_usage(body: Mapping[str, Any]) -> bool:
    """Whether the client asked for a usage event at the end of its stream."""
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True
