"""The second stage: decide which upstreams may serve a request, note their load, and admit it against its limits.

A tenant over a budget is refused, or degraded to the cheaper upstreams its policy names (`when_exhausted`), which
are then admitted against its rate limits alone. The refusals' words are accounting's; how they are typed on the
wire, and the rate headers, the inbound's.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Awaitable
from dataclasses import replace

from gateway.accounting import usage as accounting
from gateway.accounting.refusals import budget_exhausted, rate_limited
from gateway.errors import StateUnavailable
from gateway.operations.metrics import Metrics
from gateway.pipeline.inbound import Inbound
from gateway.pipeline.intake import Taken
from gateway.pipeline.record import Record
from gateway.pipeline.runtime import Runtime
from gateway.routing.capacity.state import Capacity
from gateway.routing.policy.decide import Decision, Live, decide
from gateway.routing.policy.model import Policy
from gateway.state.base import NANO, WINDOWS, Admission, FailClosed, Limits
from gateway.state.circuits import Circuits
from gateway.state.latency import LatencyTracker
from gateway.state.ledger import Ledger
from gateway.values import value


@value
class Admitted:
    """A request admitted: the upstreams that may serve it, in order, and the limits it was counted against."""

    decision: Decision
    limits: Limits


class Admitter:
    """Decides and admits requests against what is known of the upstreams now and the tenant's limits."""

    def __init__(self, metrics: Metrics, ledger: Ledger, latency: LatencyTracker, circuits: Circuits,
                 capacity: Capacity, audit_capacity: bool) -> None:
        self.metrics = metrics
        self.ledger = ledger
        self.latency = latency
        self.circuits = circuits
        self.capacity = capacity
        self.audit_capacity = audit_capacity  # whether the load readings behind each order are kept for the audit
        self.live = Live(ttft_p95_ms=latency.view)
        self._refreshed = 0.0
        self._id_prefix = os.urandom(8).hex()  # unique per process; a counter makes each reservation's id unique
        self._reservations = itertools.count(1)

    async def admit(self, runtime: Runtime, inbound: Inbound, taken: Taken, record: Record) -> Admitted:
        """The decision for a request, admitted against its limits (degraded when a budget says so)."""
        policy, features = runtime.policy, taken.features
        live = self._live(runtime)
        decision = await self.decision(runtime, inbound, taken, live)
        record.candidates, record.excluded = decision.candidates, decision.excluded
        limits = accounting.limits_for(policy, features, decision.candidates)
        if not limits.empty:
            decision, limits = await self._within_limits(policy, inbound, taken, live, decision, limits, record)
        record.rule = decision.rule or "-"
        record.candidates, record.excluded = decision.candidates, decision.excluded
        m = self.metrics
        m.count(m.decisions, decision.route, decision.rule or "-", decision.data_class or "-", decision.candidates[0])
        self._note_capacity(decision, record)
        return Admitted(decision, limits)

    def decision(self, runtime: Runtime, inbound: Inbound, taken: Taken,
                 live: Live | None = None) -> Awaitable[Decision]:
        """The decision a request is admitted on, before any budget narrows it; charges and counts nothing."""
        return inbound.pin(taken.call, decide(runtime.policy, taken.features, live or self._live(runtime)))

    def _live(self, runtime: Runtime) -> Live:
        """What decisions see of the upstreams now; latency samples decay at most once a second."""
        now = time.monotonic()
        if now - self._refreshed > 1.0:
            self._refreshed = now
            self.latency.refresh(now)
        circuit = runtime.policy.doc.resilience.circuit
        blocked = self.circuits.blocked(now, circuit.open_s, circuit.first_open_s)
        full = self.capacity.full(now)
        if blocked is not self.live.open_circuits or full is not self.live.full:
            self.live = Live(blocked, self.latency.view, full)
        return self.live

    async def _within_limits(self, policy: Policy, inbound: Inbound, taken: Taken, live: Live, decision: Decision,
                             limits: Limits, record: Record) -> tuple[Decision, Limits]:
        """Count the request against its tenant's limits and reserve its cost; degrade or refuse when over."""
        features, now = taken.features, time.time()
        admission = await self._count(policy, inbound, limits, now, record)
        if not admission.ok and admission.limit in WINDOWS:
            budget = policy.doc.tenants[features.tenant].budget
            assert budget is not None
            if isinstance(budget.when_exhausted, str):
                self.metrics.count(self.metrics.budget_exhausted, features.tenant, "reject")
                raise budget_exhausted(features.tenant, admission, limits, now)
            self.metrics.count(self.metrics.budget_exhausted, features.tenant, "route_to")
            only = frozenset(budget.when_exhausted.route_to)
            decision = await inbound.pin(taken.call, decide(policy, features, live, only=only))
            limits = replace(limits, budgets=(), cost=0)
            if limits.empty:
                return decision, limits
            admission = await self._count(policy, inbound, limits, now, record)
        if not admission.ok:
            self.metrics.count(self.metrics.rate_limited, features.tenant, admission.limit)
            raise rate_limited(features.tenant, admission)
        record.admission = admission
        for window, left in admission.remaining.items():
            self.metrics.set(self.metrics.budget_remaining, left / NANO, features.tenant, window)
        return decision, limits

    async def _count(self, policy: Policy, inbound: Inbound, limits: Limits, now: float, record: Record) -> Admission:
        """One admission at the ledger; the shared state away under fail_closed is 503 state_unavailable."""
        try:
            admission, record.backend = await self.ledger.admit(limits, self._reservation_id(), now,
                                                                policy.doc.state.on_unavailable)
        except FailClosed as exc:
            raise StateUnavailable(str(exc)) from None
        record.rate_headers = inbound.rate_headers(limits, admission)
        return admission

    def _reservation_id(self) -> str:
        """An id no other reservation of any replica has (unlike request ids, which clients may choose)."""
        return f"{self._id_prefix}r{next(self._reservations):x}"

    def _note_capacity(self, decision: Decision, record: Record) -> None:
        """Count the request against its first choice's load, and keep the readings behind the order."""
        if not self.capacity.gauges:
            return
        self.capacity.sent(decision.candidates[0])
        record.spilled_from = decision.spilled_from
        if self.audit_capacity:
            views = ((name, self.capacity.view(name)) for name in decision.candidates)
            record.capacity = {name: view.fields() for name, view in views if view is not None}
