"""The third stage: have the dispatcher find an upstream for the request, and relay its answer or its stream.

An upstream's own client error (400, 404, 422...) is handed on, scrubbed of credentials. A stream that the
server's drain cuts is ended with the inbound's failure event; one cut before it began is 503 shutting_down.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TypeVar

from gateway.accounting import usage as accounting
from gateway.asgi import DisconnectWatch, Send, send_bytes
from gateway.delivery.dispatch import Accept, Dispatcher, Request, Resume
from gateway.delivery.relay import SseRelay, Transcript
from gateway.delivery.streaming import (
    INTERRUPTED,
    SHUTTING_DOWN,
    Opened,
    Stream,
    can_continue,
    open_stream,
    wants_usage,
)
from gateway.errors import GatewayError, UpstreamStatus
from gateway.operations.metrics import Metrics
from gateway.pipeline.inbound import Call, Inbound
from gateway.pipeline.record import Record
from gateway.pipeline.runtime import Runtime
from gateway.routing.policy.decide import Decision
from gateway.routing.policy.schema import Resilience
from gateway.state.latency import LatencyTracker
from gateway.upstreams.base import Client, Exchange
from gateway.upstreams.redact import scrub

STREAM_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
                  (b"x-accel-buffering", b"no")]
logger = logging.getLogger("switchyard.proxy")
T = TypeVar("T")


class Delivery:
    """What one request is delivered with: where it runs, what it asks, and where its answer goes."""

    def __init__(self, runtime: Runtime, inbound: Inbound, call: Call, decision: Decision, request: Request,
                 send: Send, record: Record, watcher: DisconnectWatch) -> None:
        self.runtime = runtime
        self.inbound = inbound
        self.call = call
        self.decision = decision
        self.request = request
        self.send = send
        self.record = record
        self.watcher = watcher
        self.resilience = resilience_of(runtime, decision)


class Deliverer:
    """Runs requests through the dispatcher and relays what comes back."""

    def __init__(self, metrics: Metrics, dispatcher: Dispatcher, latency: LatencyTracker) -> None:
        self.metrics = metrics
        self.dispatcher = dispatcher
        self.latency = latency

    async def plain(self, d: Delivery) -> None:
        """Answer with the first good whole answer."""
        try:
            upstream, data = await self.dispatcher.run(d.decision, d.runtime.upstreams, d.resilience, d.request,
                                                       _read_whole, d.record.dispatch)
        except UpstreamStatus as exc:
            await pass_error(d, exc)
            return
        d.record.served_by(upstream)
        answer = await d.inbound.answer(d.call, upstream, data)
        usage, cost = accounting.settle(self.metrics, d.runtime.policy, d.record.tenant, upstream.name,
                                        d.inbound.usage(d.call, data), d.record.n)
        d.record.charge(usage, cost)
        d.watcher.stop()
        d.record.status = 200
        await send_bytes(d.send, 200, answer, b"application/json",
                         [*d.record.tell(), (b"x-switchyard-cost-usd", accounting.format_usd(cost))])

    async def stream(self, d: Delivery, started: float) -> None:
        """Relay the first stream that opens, continued or ended honestly if it breaks."""
        record, resilience = d.record, d.resilience
        found = await self._open(d)
        if found is None:
            return
        upstream, opened = found
        record.served_by(upstream)
        events = await d.inbound.events(d.call, upstream, opened.first)
        record.status = 200
        await d.send({"type": "http.response.start", "status": 200, "headers": [*STREAM_HEADERS, *record.tell()]})
        self.metrics.observe(self.metrics.ttft, time.perf_counter() - started, record.route, upstream.name)
        # the live p95 that ranks upstreams counts this upstream's own try, not earlier candidates' failures
        self.latency.observe(upstream.name, record.dispatch.attempts[-1].seconds, time.monotonic())
        candidates = [d.runtime.upstreams[name] for name in d.decision.candidates]
        stream = Stream(self.metrics, d.request, resilience, events.outgoing(d.send), candidates,
                        record.prompt_tokens, Resume(self.dispatcher, d.decision.route, record.dispatch))
        failure = INTERRUPTED
        try:
            ending = await stream.run(opened)
        except asyncio.CancelledError:
            if d.watcher.client_gone:
                raise
            shut_down("ending it with an error event")
            ending, failure = stream.shut_down(), SHUTTING_DOWN
        finally:
            for name, usage in stream.parts:
                record.charge(*accounting.settle(self.metrics, d.runtime.policy, record.tenant, name, usage, record.n))
        d.watcher.stop()
        if stream.interrupted:
            record.outcome = "stream_interrupted"
        ending = events.failed(failure) if stream.interrupted else events.ending(ending)
        await d.send({"type": "http.response.body", "body": ending, "more_body": False})

    async def _open(self, d: Delivery) -> tuple[Client, Opened] | None:
        """The first stream that sends its first events; None when an upstream's client error was passed on."""
        strip = not wants_usage(d.request.body)
        keep_transcript = can_continue(d.request, [d.runtime.upstreams[name] for name in d.decision.candidates])

        async def first_events(exchange: Exchange) -> Opened:
            relay = SseRelay(strip, Transcript() if keep_transcript else None)
            return await open_stream(d.runtime.upstreams[exchange.upstream], exchange, relay,
                                     d.resilience.ttft_timeout_s)

        return await self.first(d, first_events)

    async def first(self, d: Delivery, accept: Accept[T]) -> tuple[Client, T] | None:
        """The first upstream's answer accept takes; None when an upstream's client error was passed on."""
        try:
            return await self.dispatcher.run(d.decision, d.runtime.upstreams, d.resilience, d.request, accept,
                                             d.record.dispatch)
        except UpstreamStatus as exc:
            await pass_error(d, exc)
            return None
        except asyncio.CancelledError:
            if d.watcher.client_gone:
                raise
            shut_down("answering shutting_down")
            raise GatewayError("the gateway is shutting down; retry the request", status=503,
                               code="shutting_down") from None


async def _read_whole(exchange: Exchange) -> bytes:
    try:
        return await exchange.read()
    finally:
        exchange.close()


def shut_down(outcome: str) -> None:
    """Take back a cancellation that did not come from the client (the server's drain ran out), and say so once."""
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()
    logger.warning("the drain deadline passed with this stream open: %s", outcome)


def resilience_of(runtime: Runtime, decision: Decision) -> Resilience:
    """The resilience settings of the decision's route, or the policy's own."""
    return runtime.policy.doc.models[decision.route].resilience or runtime.policy.doc.resilience


async def pass_error(d: Delivery, exc: UpstreamStatus) -> None:
    """Hand an upstream's client error (400, 404, 422...) to the client, scrubbed of any credential."""
    upstream = d.runtime.upstreams[exc.upstream]
    d.record.served_by(upstream)
    d.record.status = exc.status
    d.watcher.stop()
    reply = d.inbound.upstream_error(d.call, exc, scrub(exc.body, upstream))
    await send_bytes(d.send, reply.status, reply.body, reply.content_type, [*reply.headers, *d.record.tell()])
