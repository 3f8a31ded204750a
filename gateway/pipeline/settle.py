"""The last stage: settle what a request cost where it was admitted, and record it in the metrics and the audit."""

from __future__ import annotations

import time

from gateway.accounting import usage as accounting
from gateway.operations.audit import AuditLog
from gateway.operations.metrics import Metrics
from gateway.pipeline.record import Record
from gateway.routing.policy.model import Policy
from gateway.state.base import NANO, Charge, Limits, to_nano
from gateway.state.ledger import Ledger


class Settler:
    """Settles requests at the ledger and records them."""

    def __init__(self, metrics: Metrics, ledger: Ledger, audit: AuditLog) -> None:
        self.metrics = metrics
        self.ledger = ledger
        self.audit = audit

    async def settle(self, policy: Policy, limits: Limits, record: Record) -> None:
        """Record what the request cost (or release its reservation) where it was admitted, and what a spill cost."""
        if not record.admission.ok and record.upstream == "none":
            return  # refused before any upstream: nothing was reserved, nothing was spent
        saved = 0.0
        if record.upstream != "none" and record.route != "unknown":
            baseline = accounting.baseline_cost(policy, record.route, record.usage)
            if baseline is not None:
                saved = baseline - record.cost
                if saved > 0:
                    self.metrics.count(self.metrics.savings, record.tenant, record.route, amount=saved)
        cost = to_nano(record.cost)
        if limits.budgets and cost > limits.cost:
            self.metrics.count(self.metrics.budget_overshoot, record.tenant, amount=(cost - limits.cost) / NANO)
        record.savings = saved
        served = record.upstream if record.cost or record.status == 200 else ""
        charge = Charge(served, cost, record.usage.prompt_tokens + record.usage.completion_tokens,
                        to_nano(saved) if saved else 0)
        await self.ledger.settle(record.backend or self.ledger.backend, limits, record.admission, charge, time.time())
        if record.spilled_from is not None:
            self._count_spill(policy, record)

    def _count_spill(self, policy: Policy, record: Record) -> None:
        """A spilled request's move, and what it cost beyond the same tokens on the full upstream."""
        full = record.spilled_from
        if full is None or record.upstream in ("none", full):
            return
        self.metrics.count(self.metrics.spills, record.route, full, record.upstream)
        extra = record.cost - accounting.cost_of(policy, full, record.usage)
        if extra > 0:
            self.metrics.count(self.metrics.spill_cost, record.tenant, record.route, amount=extra)

    def finish(self, record: Record, elapsed: float) -> None:
        """Count the request in the metrics and write its audit record."""
        m = self.metrics
        m.count(m.requests, record.tenant, record.endpoint, record.route, record.upstream, str(record.status))
        for upstream, reason in record.excluded:
            m.count(m.excluded, record.route, upstream, reason)
        m.observe(m.duration, elapsed, record.route, record.upstream)
        if self.audit.enabled:
            self.audit.record(record.audit_fields(elapsed))
