"""A Messages API stream delivered: the first upstream to send an event wins, its events relayed as they come.

The same fallback loop, timeouts and accounting as a chat stream (gateway/pipeline/deliver.py); what differs is
the wire format: a stream ends with `message_stop`, and one that cannot be finished ends with an `error` event.
A cut stream is not continued elsewhere (continuation speaks chat completions only).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

from gateway.accounting import usage as accounting
from gateway.accounting.meter import TextMeter
from gateway.asgi import Message, Send
from gateway.delivery.streaming import completion_cap
from gateway.errors import UpstreamError
from gateway.inbound.messages import errors
from gateway.inbound.messages.stream import Opened, open_stream, relay
from gateway.pipeline.deliver import STREAM_HEADERS, Deliverer, Delivery, shut_down
from gateway.upstreams.base import Exchange

TEXT_KEYS = (b'text":', b'thinking":', b'partial_json":')  # where a Messages stream carries generated text
INTERRUPTED = "the upstream stream broke off; the answer is incomplete"
SHUTTING_DOWN = "the gateway is shutting down and ended this stream; the answer is incomplete"


async def stream(deliverer: Deliverer, d: Delivery, started: float) -> None:
    """Relay the first Messages stream that opens; end it with an error event if it breaks."""
    opened = await _open(deliverer, d)
    if opened is None:
        return
    record, metrics = d.record, deliverer.metrics
    upstream = d.runtime.upstreams[opened.exchange.upstream]
    record.served_by(upstream)
    record.status = 200
    await d.send({"type": "http.response.start", "status": 200, "headers": [*STREAM_HEADERS, *record.tell()]})
    metrics.observe(metrics.ttft, time.perf_counter() - started, record.route, upstream.name)
    deliverer.latency.observe(upstream.name, record.dispatch.attempts[-1].seconds, time.monotonic())
    meter = TextMeter(TEXT_KEYS)
    failure: UpstreamError | None = None
    message = INTERRUPTED
    try:
        failure = await relay(opened, _metered(d.send, meter))
    except asyncio.CancelledError:
        if d.watcher.client_gone:
            raise
        shut_down("ending it with an error event")
        failure, message = UpstreamError(upstream.name, "shutdown"), SHUTTING_DOWN
        failure.reason = "shutdown"
    finally:
        record.charge(*accounting.settle(metrics, d.runtime.policy, record.tenant, upstream.name,
                                         _used(opened, meter, record.prompt_tokens, d.call.client_body), record.n))
    d.watcher.stop()
    ending = b""
    if failure is not None:
        record.outcome = "stream_interrupted"
        metrics.count(metrics.stream_failures, upstream.name, failure.reason, "error_event")
        if opened.relay.error is None:  # an upstream's own error event already told the client
            ending = errors.error_event("api_error", message)
    await d.send({"type": "http.response.body", "body": ending, "more_body": False})


async def _open(deliverer: Deliverer, d: Delivery) -> Opened | None:
    """The first stream that sends its first events; None when an upstream's client error was passed on."""
    async def first_events(exchange: Exchange) -> Opened:
        return await open_stream(exchange, d.resilience.ttft_timeout_s)

    found = await deliverer.first(d, first_events)
    return None if found is None else found[1]


def _metered(send: Send, meter: TextMeter) -> Send:
    """send, counting the text of every event that goes out (for a stream cut before it reports its usage)."""
    async def metering(message: Message) -> None:
        body = message.get("body")
        if body:
            meter.add(body)
        await send(message)
    return metering


def _used(opened: Opened, meter: TextMeter, prompt_estimate: int, body: Mapping[str, Any]) -> accounting.Usage:
    """What the stream used: as it reported (at least a token per delta it sent), or, where it was cut or its
    count cannot be read, estimated from the text relayed, up to max_tokens."""
    relay = opened.relay
    reported = relay.tokens()
    if relay.stopped and relay.counted:
        completion = max(reported.completion_tokens, relay.deltas)
    else:
        estimate = max(reported.completion_tokens, meter.tokens, relay.deltas)
        cap = completion_cap(body)
        completion = estimate if cap is None else min(estimate, cap)
    if not reported.prompt_tokens:
        return accounting.Usage(prompt_estimate, completion)
    return accounting.Usage(reported.prompt_tokens, completion, reported.cache_read_tokens, reported.cache_write_tokens,
                            reported.cache_write_1h_tokens)

