"""The hot path: POST /v1/chat/completions, /v1/completions and /v1/embeddings as plain ASGI."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import logging
import os
import re
import secrets
import time
from dataclasses import replace
from typing import Any

from gateway.accounting import usage as accounting
from gateway.accounting.refusals import budget_exhausted, rate_headers, rate_limited
from gateway.delivery.dispatch import Dispatch, Dispatcher, Request
from gateway.delivery.redact import scrub
from gateway.delivery.sse import SseRelay, Transcript
from gateway.delivery.streaming import Opened, Stream, can_continue, open_stream, wants_usage
from gateway.errors import (
    GatewayError,
    InvalidRequest,
    NoCandidate,
    UpstreamStatus,
)
from gateway.inbound.responses import Holders, response_id, streamed_response_id
from gateway.operations import logs
from gateway.operations.audit import AuditLog
from gateway.operations.metrics import Metrics
from gateway.routing import classify
from gateway.routing.capacity.state import Capacity
from gateway.routing.policy.decide import Decision, Features, Live, decide
from gateway.routing.policy.model import Policy
from gateway.routing.policy.schema import Resilience
from gateway.serving.asgi import (
    JSON,
    ClientGone,
    DisconnectWatch,
    Headers,
    Receive,
    Scope,
    Send,
    header_map,
    parse_object,
    read_body,
    send_bytes,
    send_error,
)
from gateway.serving.auth import authenticate, check_route
from gateway.serving.runtime import Runtime
from gateway.state.base import NANO, WINDOWS, Admission, Backend, Charge, Limits, to_nano
from gateway.state.latency import LatencyTracker
from gateway.state.ledger import Ledger
from gateway.upstreams.base import Client, Exchange

ENDPOINTS = {
    "/v1/chat/completions": ("chat", "/chat/completions"),
    "/v1/completions": ("completions", "/completions"),
    "/v1/embeddings": ("embeddings", "/embeddings"),
    "/v1/responses": ("responses", "/responses"),
}
STREAMABLE = frozenset({"chat", "completions", "responses"})
STREAM_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
                  (b"x-accel-buffering", b"no")]
CLIENT_CLOSED = 499
WATCH_AFTER_S = 0.05  # how long a request runs before its client's disconnect is watched for
NOT_ADMITTED = Admission(False)
REQUEST_ID = re.compile(r"(?!.*\.\.)[A-Za-z0-9._-]{1,128}")  # no "/", no "..": ids reach files and upstreams
logger = logging.getLogger("switchyard.proxy")


class Proxy:
    """Serves the hot endpoints: authenticate, classify, decide, dispatch, relay, account."""

    def __init__(self, metrics: Metrics, dispatcher: Dispatcher, latency: LatencyTracker, ledger: Ledger,
                 audit: AuditLog, max_body_bytes: int) -> None:
        self.metrics = metrics
        self.audit = audit
        self.dispatcher = dispatcher
        self.latency = latency
        self.ledger = ledger
        self.live = Live(ttft_p95_ms=latency.view)
        self.capacity = Capacity(metrics)
        self.max_body_bytes = max_body_bytes
        self._refreshed = 0.0
        self._id_prefix = os.urandom(8).hex()  # unique per process; a counter makes each reservation's id unique
        self._reservations = itertools.count(1)
        self.holders = Holders()  # which upstream holds each response id, for previous_response_id

    def _reservation_id(self) -> str:
        """An id no other reservation of any replica has (unlike request ids, which clients may choose)."""
        return f"{self._id_prefix}r{next(self._reservations):x}"

    def _live(self, runtime: Runtime) -> Live:
        """What decisions see of the upstreams now; latency samples decay at most once a second."""
        now = time.monotonic()
        if now - self._refreshed > 1.0:
            self._refreshed = now
            self.latency.refresh(now)
        blocked = self.dispatcher.circuits.blocked(now, runtime.policy.doc.resilience.circuit.open_s)
        full = self.capacity.full(now)
        if blocked is not self.live.open_circuits or full is not self.live.full:
            self.live = Live(blocked, self.latency.view, full)
        return self.live

    async def __call__(self, scope: Scope, receive: Receive, send: Send, runtime: Runtime) -> None:
        """Answer one request on a hot endpoint."""
        started = time.perf_counter()
        endpoint, path = ENDPOINTS[scope["path"]]
        headers = header_map(scope)
        request_id = headers["x-request-id"] = request_id_for(headers.get("x-request-id", ""))
        logs.request_id.set(request_id)
        done = _Done(request_id, runtime.policy.hash)
        try:
            await self._handle(endpoint, path, headers, receive, send, runtime, done, started)
        except GatewayError as exc:
            done.status, done.outcome = exc.status, f"error:{exc.reason}"
            if isinstance(exc, NoCandidate):
                done.excluded = exc.excluded or done.excluded
                if exc.code == "residency_unavailable":
                    self.metrics.count(self.metrics.residency_denied, done.tenant, done.data_class)
            await send_error(send, exc, done.tell())
        except ClientGone:
            done.status, done.outcome = CLIENT_CLOSED, "client_closed"
        finally:
            elapsed = time.perf_counter() - started
            m = self.metrics
            m.count(m.requests, done.tenant, endpoint, done.route, done.upstream, str(done.status))
            for upstream, reason in done.excluded:
                m.count(m.excluded, done.route, upstream, reason)
            m.observe(m.duration, elapsed, done.route, done.upstream)
            if self.audit.enabled:
                self.audit.record(done.audit_fields(endpoint, elapsed))

    async def _handle(self, endpoint: str, path: str, headers: dict[str, str], receive: Receive, send: Send,
                      runtime: Runtime, done: _Done, started: float) -> None:
        policy = runtime.policy
        done.tenant = authenticate(policy, headers)
        body = parse_object(await read_body(receive, headers, self.max_body_bytes))
        done.route = check_route(policy, done.tenant, body)
        features = await classify.features_of(policy, done.tenant, endpoint, body, headers)
        done.data_class = features.data_class or "-"
        done.prompt_tokens, done.n = features.prompt_tokens, features.n
        if features.stream and endpoint not in STREAMABLE:
            raise InvalidRequest(f"'stream' is not supported on {path}", param="stream")
        live = self._live(runtime)
        decision = self._pinned(decide(policy, features, live), body)
        done.candidates, done.excluded = decision.candidates, decision.excluded
        limits = accounting.limits_for(policy, features, decision.candidates)
        if not limits.empty:
            decision, limits = await self._admit(policy, features, live, decision, limits, done, body)
        done.rule = decision.rule or "-"
        done.candidates, done.excluded = decision.candidates, decision.excluded
        self._count_decision(decision)
        self._note_capacity(decision, done)
        request = Request(path, accounting.capped(policy, features, body), headers, features.stream)
        task = asyncio.current_task()
        assert task is not None
        watcher = DisconnectWatch(receive, task, WATCH_AFTER_S)
        try:
            if features.stream:
                await self._stream(runtime, decision, request, send, done, started, watcher)
            else:
                await self._plain(runtime, decision, request, send, done, watcher)
        except asyncio.CancelledError:
            if not watcher.client_gone or task.uncancel() > 0:
                raise
            done.status, done.outcome = CLIENT_CLOSED, "client_closed"
        finally:
            watcher.stop()
            done.record.finish()
            await self._settle(policy, limits, done)
            self._count_spill(policy, done)

    def _pinned(self, decision: Decision, body: dict[str, Any]) -> Decision:
        """decision, narrowed to the upstream holding a Responses API follow-up's previous response."""
        return self.holders.pin(decision, body) if "previous_response_id" in body else decision

    async def _admit(self, policy: Policy, features: Features, live: Live, decision: Decision, limits: Limits,
                     done: _Done, body: dict[str, Any]) -> tuple[Decision, Limits]:
        """Count the request against its tenant's limits and reserve its cost; degrade or refuse when over."""
        now = time.time()
        admission, done.backend = await self.ledger.admit(limits, self._reservation_id(), now,
                                                          policy.doc.state.on_unavailable)
        done.rate_headers = rate_headers(limits, admission)
        if not admission.ok and admission.limit in WINDOWS:
            budget = policy.doc.tenants[features.tenant].budget
            assert budget is not None
            if isinstance(budget.when_exhausted, str):
                self.metrics.count(self.metrics.budget_exhausted, features.tenant, "reject")
                raise budget_exhausted(features.tenant, admission, limits, now)
            self.metrics.count(self.metrics.budget_exhausted, features.tenant, "route_to")
            decision = self._pinned(decide(policy, features, live, only=frozenset(budget.when_exhausted.route_to)),
                                    body)
            limits = replace(limits, budgets=(), cost=0)
            if limits.empty:
                return decision, limits
            admission, done.backend = await self.ledger.admit(limits, self._reservation_id(), now,
                                                              policy.doc.state.on_unavailable)
            done.rate_headers = rate_headers(limits, admission)
        if not admission.ok:
            self.metrics.count(self.metrics.rate_limited, features.tenant, admission.limit)
            raise rate_limited(features.tenant, admission)
        done.admission = admission
        for window, left in admission.remaining.items():
            self.metrics.set(self.metrics.budget_remaining, left / NANO, features.tenant, window)
        return decision, limits

    async def _settle(self, policy: Policy, limits: Limits, done: _Done) -> None:
        """Record what the request cost (or release its reservation) where it was admitted."""
        if not done.admission.ok and done.upstream == "none":
            return  # refused before any upstream: nothing was reserved, nothing was spent
        saved = 0.0
        if done.upstream != "none" and done.route != "unknown":
            baseline = accounting.baseline_cost(policy, done.route, done.usage)
            if baseline is not None:
                saved = baseline - done.cost
                if saved > 0:
                    self.metrics.count(self.metrics.savings, done.tenant, done.route, amount=saved)
        cost = to_nano(done.cost)
        if limits.budgets and cost > limits.cost:
            self.metrics.count(self.metrics.budget_overshoot, done.tenant, amount=(cost - limits.cost) / NANO)
        done.savings = saved
        served = done.upstream if done.cost or done.status == 200 else ""
        charge = Charge(served, cost, done.usage.prompt_tokens + done.usage.completion_tokens, to_nano(saved))
        await self.ledger.settle(done.backend or self.ledger.backend, limits, done.admission, charge, time.time())

    async def _plain(self, runtime: Runtime, decision: Decision, request: Request, send: Send, done: _Done,
                     watcher: DisconnectWatch) -> None:
        try:
            upstream, data = await self.dispatcher.run(decision, runtime.upstreams, _resilience(runtime, decision),
                                                       request, _read_whole, done.record)
        except UpstreamStatus as exc:
            await self._pass_error(runtime, exc, send, done, watcher)
            return
        done.served_by(upstream)
        if request.path == "/responses":
            self.holders.remember(response_id(data), upstream.name)
        usage, cost = accounting.settle(self.metrics, runtime.policy, done.tenant, upstream.name,
                                        accounting.Usage.of_body(data), done.n)
        done.charge(usage, cost)
        watcher.stop()
        done.status = 200
        await send_bytes(send, 200, data, JSON, [*done.tell(), (b"x-switchyard-cost-usd", accounting.format_usd(cost))])

    async def _stream(self, runtime: Runtime, decision: Decision, request: Request, send: Send, done: _Done,
                      started: float, watcher: DisconnectWatch) -> None:
        resilience = _resilience(runtime, decision)
        candidates = [runtime.upstreams[name] for name in decision.candidates]
        strip = not wants_usage(request.body)
        keep_transcript = can_continue(request, candidates)

        async def first_events(exchange: Exchange) -> Opened:
            relay = SseRelay(strip, Transcript() if keep_transcript else None)
            return await open_stream(runtime.upstreams[exchange.upstream], exchange, relay, resilience.ttft_timeout_s)

        deadline = time.monotonic() + resilience.deadline_s - (time.perf_counter() - started)
        try:
            upstream, opened = await self.dispatcher.run(decision, runtime.upstreams, resilience, request,
                                                         first_events, done.record)
        except UpstreamStatus as exc:
            await self._pass_error(runtime, exc, send, done, watcher)
            return
        except asyncio.CancelledError:
            if watcher.client_gone:
                raise
            _shut_down("answering 503 shutting_down")
            raise GatewayError("the gateway is shutting down; retry the request", status=503,
                               code="shutting_down") from None
        done.served_by(upstream)
        if request.path == "/responses":
            self.holders.remember(streamed_response_id(opened.first), upstream.name)
        done.status = 200
        await send({"type": "http.response.start", "status": 200, "headers": [*STREAM_HEADERS, *done.tell()]})
        ttft = time.perf_counter() - started
        self.metrics.observe(self.metrics.ttft, ttft, done.route, upstream.name)
        # the live p95 that ranks upstreams counts this upstream's own try, not earlier candidates' failures
        self.latency.observe(upstream.name, done.record.attempts[-1].seconds, time.monotonic())
        stream = Stream(self.metrics, request, resilience, send, candidates, done.prompt_tokens, deadline)
        try:
            ending = await stream.run(opened)
        except asyncio.CancelledError:
            if watcher.client_gone:
                raise
            _shut_down("ending it with an error event")
            ending = stream.shut_down()
        finally:
            for name, usage in stream.parts:
                done.charge(*accounting.settle(self.metrics, runtime.policy, done.tenant, name, usage, done.n))
        watcher.stop()
        if stream.interrupted:
            done.outcome = "stream_interrupted"
        await send({"type": "http.response.body", "body": ending, "more_body": False})

    async def _pass_error(self, runtime: Runtime, exc: UpstreamStatus, send: Send, done: _Done,
                          watcher: DisconnectWatch) -> None:
        """Hand an upstream's client error (400, 404, 422...) to the client, scrubbed of any credential."""
        done.served_by(runtime.upstreams[exc.upstream])
        done.status = exc.status
        watcher.stop()
        body = scrub(exc.body, runtime.upstreams[exc.upstream])
        content_type = exc.content_type if exc.content_type.startswith(JSON) else JSON
        await send_bytes(send, exc.status, body, content_type, done.tell())

    def _note_capacity(self, decision: Decision, done: _Done) -> None:
        """Count the request against its first choice's load, and keep the readings behind the order."""
        if not self.capacity.gauges:
            return
        self.capacity.sent(decision.candidates[0])
        done.spilled_from = decision.spilled_from
        if self.audit.enabled:
            views = ((name, self.capacity.view(name)) for name in decision.candidates)
            done.capacity = {name: view.fields() for name, view in views if view is not None}

    def _count_spill(self, policy: Policy, done: _Done) -> None:
        """A spilled request's move, and what it cost beyond the same tokens on the full upstream."""
        full = done.spilled_from
        if full is None or done.upstream in ("none", full):
            return
        self.metrics.count(self.metrics.spills, done.route, full, done.upstream)
        extra = done.cost - policy.cost(full, done.usage.prompt_tokens, done.usage.completion_tokens)
        if extra > 0:
            self.metrics.count(self.metrics.spill_cost, done.tenant, done.route, amount=extra)

    def _count_decision(self, decision: Decision) -> None:
        m = self.metrics
        m.count(m.decisions, decision.route, decision.rule or "-", decision.data_class or "-", decision.candidates[0])


class _Done:
    """The running account of one request: its metric labels, its status, and the headers it earns."""

    def __init__(self, request_id: str, policy_hash: str) -> None:
        self.request_id = request_id
        self.policy_hash = policy_hash
        self.record = Dispatch()
        self.route = "unknown"
        self.upstream = "none"
        self.status = 500
        self.tenant = "-"
        self.data_class = "-"
        self.region = "-"
        self.rule = "-"
        self.prompt_tokens = 0
        self.n = 1
        self.rate_headers: Headers = []
        self.cost = 0.0
        self.usage = accounting.Usage()
        self.backend: Backend | None = None
        self.admission = NOT_ADMITTED
        self.outcome = "ok"
        self.savings = 0.0
        self.candidates: tuple[str, ...] = ()
        self.excluded: tuple[tuple[str, str], ...] = ()
        self.spilled_from: str | None = None
        self.capacity: dict[str, dict[str, object]] = {}

    def audit_fields(self, endpoint: str, elapsed: float) -> dict[str, object]:
        """The audit record of this request: the decision and every attempt, never content or keys."""
        fields = self._fields(endpoint, elapsed)
        if self.capacity:
            fields["capacity"] = self.capacity
            fields["spilled_from"] = self.spilled_from
        return fields

    def _fields(self, endpoint: str, elapsed: float) -> dict[str, object]:
        return {
            "time": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"), "request_id": self.request_id,
            "endpoint": endpoint, "tenant": self.tenant, "route": self.route, "data_class": self.data_class,
            "policy": self.policy_hash, "rule": self.rule, "candidates": list(self.candidates),
            "excluded": [{"upstream": u, "reason": r} for u, r in self.excluded],
            "attempts": [a.fields() for a in self.record.attempts], "upstream": self.upstream, "region": self.region,
            "status": self.status, "outcome": self.outcome if self.status < 400 or self.outcome != "ok"
            else f"error:http_{self.status}",
            "tokens": {"prompt": self.usage.prompt_tokens, "completion": self.usage.completion_tokens},
            "cost_usd": round(self.cost, 10), "savings_usd": round(self.savings, 10), "ms": round(elapsed * 1000, 3),
        }

    def charge(self, usage: accounting.Usage, cost: float) -> None:
        self.usage = accounting.Usage(self.usage.prompt_tokens + usage.prompt_tokens,
                                      self.usage.completion_tokens + usage.completion_tokens)
        self.cost += cost

    def served_by(self, upstream: Client) -> None:
        self.upstream = upstream.name
        self.region = upstream.spec.region or "-"

    def tell(self) -> Headers:
        headers = [(b"x-request-id", self.request_id.encode("latin-1")),
                   (b"x-switchyard-policy", self.policy_hash.encode())]
        if self.upstream != "none":
            headers += [(b"x-switchyard-upstream", self.upstream.encode()),
                        (b"x-switchyard-region", self.region.encode())]
        if self.data_class != "-":
            headers.append((b"x-switchyard-data-class", self.data_class.encode()))
        if self.route != "unknown":
            headers.append((b"x-switchyard-rule", self.rule.encode()))
        if self.spilled_from is not None:
            headers.append((b"x-switchyard-spilled-from", self.spilled_from.encode()))
        return headers + self.rate_headers if self.rate_headers else headers


def request_id_for(offered: str) -> str:
    """The client's own request id when it is safe to pass on and log, else a random one."""
    return offered if REQUEST_ID.fullmatch(offered) else secrets.token_hex(12)


async def _read_whole(exchange: Exchange) -> bytes:
    try:
        return await exchange.read()
    finally:
        exchange.close()


def _shut_down(outcome: str) -> None:
    """Take back a cancellation that did not come from the client (the server's drain ran out), and say so once."""
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()
    logger.warning("the drain deadline passed with this stream open: %s", outcome)


def _resilience(runtime: Runtime, decision: Decision) -> Resilience:
    return runtime.policy.doc.models[decision.route].resilience or runtime.policy.doc.resilience
