"""The request pipeline: intake, decide and admit, deliver, settle and record, for any inbound wire format."""

from __future__ import annotations

import asyncio
import time

from gateway.accounting import usage as accounting
from gateway.asgi import ClientGone, DisconnectWatch, Receive, Scope, Send, header_map, send_bytes
from gateway.delivery.dispatch import Dispatcher, Request
from gateway.errors import GatewayError, NoCandidate
from gateway.operations import logs
from gateway.operations.audit import AuditLog
from gateway.operations.metrics import Metrics
from gateway.pipeline.admit import Admitted, Admitter
from gateway.pipeline.deliver import Deliverer, Delivery
from gateway.pipeline.inbound import Endpoint, Inbound
from gateway.pipeline.intake import RequestIds, Taken, take_in
from gateway.pipeline.record import Record
from gateway.pipeline.runtime import Runtime
from gateway.pipeline.settle import Settler
from gateway.routing.capacity.state import Capacity
from gateway.state.latency import LatencyTracker
from gateway.state.ledger import Ledger

CLIENT_CLOSED = 499
WATCH_AFTER_S = 0.05  # how long a request runs before its client's disconnect is watched for


class Pipeline:
    """Serves the hot endpoints of every inbound format: each request taken in, decided, delivered and settled."""

    def __init__(self, metrics: Metrics, dispatcher: Dispatcher, latency: LatencyTracker, ledger: Ledger,
                 audit: AuditLog, max_body_bytes: int) -> None:
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.capacity = Capacity(metrics)
        self.ids = RequestIds()
        self.admitter = Admitter(metrics, ledger, latency, dispatcher.circuits, self.capacity, audit.enabled)
        self.deliverer = Deliverer(metrics, dispatcher, latency)
        self.settler = Settler(metrics, ledger, audit)

    async def __call__(self, scope: Scope, receive: Receive, send: Send, runtime: Runtime, inbound: Inbound) -> None:
        """Answer one request on one of inbound's endpoints."""
        started = time.perf_counter()
        endpoint = inbound.endpoints[scope["path"]]
        runtime = inbound.bind(runtime)
        headers = header_map(scope)
        request_id = headers["x-request-id"] = self.ids.for_request(headers.get("x-request-id", ""))
        logs.request_id.set(request_id)
        record = Record(request_id, runtime.policy.hash, endpoint.name)
        try:
            await self._run(endpoint, headers, receive, send, runtime, inbound, record, started)
        except GatewayError as exc:
            self.note_failure(exc, record)
            reply = inbound.error(exc)
            await send_bytes(send, reply.status, reply.body, reply.content_type, [*reply.headers, *record.tell()])
        except ClientGone:
            record.status, record.outcome = CLIENT_CLOSED, "client_closed"
        finally:
            self.settler.finish(record, time.perf_counter() - started)

    async def _run(self, endpoint: Endpoint, headers: dict[str, str], receive: Receive, send: Send, runtime: Runtime,
                   inbound: Inbound, record: Record, started: float) -> None:
        taken = await take_in(inbound, endpoint, runtime.policy, headers, receive, self.max_body_bytes, record)
        admitted = await self.admitter.admit(runtime, inbound, taken, record)
        task = asyncio.current_task()
        assert task is not None
        watcher = DisconnectWatch(receive, task, WATCH_AFTER_S)
        request = _request(runtime, inbound, taken, admitted, headers)
        delivery = Delivery(runtime, inbound, taken.call, admitted.decision, request, send, record, watcher)
        try:
            if taken.features.stream:
                await inbound.stream(self.deliverer, delivery, started)
            else:
                await self.deliverer.plain(delivery)
        except asyncio.CancelledError:
            if not watcher.client_gone or task.uncancel() > 0:
                raise
            record.status, record.outcome = CLIENT_CLOSED, "client_closed"
        finally:
            watcher.stop()
            record.dispatch.finish()
            await self.settler.settle(runtime.policy, admitted.limits, record)

    def note_failure(self, exc: GatewayError, record: Record) -> None:
        """Note an error answer in the record, and count a refusal for residency."""
        record.status, record.outcome = exc.status, f"error:{exc.reason}"
        if isinstance(exc, NoCandidate):
            record.excluded = exc.excluded or record.excluded
            if exc.code == "residency_unavailable":
                self.metrics.count(self.metrics.residency_denied, record.tenant, record.data_class)


def _request(runtime: Runtime, inbound: Inbound, taken: Taken, admitted: Admitted, headers: dict[str, str]) -> Request:
    """What every candidate is sent: the inbound's path and body for them, capped as the policy says."""
    candidates = [runtime.upstreams[name] for name in admitted.decision.candidates]
    path, body = inbound.outbound(taken.call, candidates)
    return Request(path, accounting.capped(runtime.policy, taken.features, body), headers, taken.features.stream)
