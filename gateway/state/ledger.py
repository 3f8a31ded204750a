"""The ledger the request path talks to: the configured backend, guarded by a circuit, with a local fallback.

When Redis cannot be reached, the policy's `state.on_unavailable` decides: `fail_closed` refuses
requests that have limits to check (FailClosed, which the pipeline answers 503 state_unavailable); `local`
checks them against this process's memory instead. Admissions made locally settle locally, so nothing is
counted twice when Redis returns.
"""

from __future__ import annotations

import logging

from gateway.operations.metrics import Metrics
from gateway.state.base import Admission, Backend, Charge, FailClosed, Limits, Spend, StateError
from gateway.state.circuits import Circuits
from gateway.state.memory import MemoryBackend

logger = logging.getLogger("switchyard.state")
FAILURES_TO_OPEN = 3
OPEN_S = 1.0
SHARED = "shared"  # the one breaker's name among Circuits


class Ledger:
    """Admits and settles requests against the shared backend, or the local one while it is away."""

    def __init__(self, backend: Backend, metrics: Metrics) -> None:
        self.backend = backend
        self.local: Backend = backend if isinstance(backend, MemoryBackend) else MemoryBackend()
        self.metrics = metrics
        self.circuit = Circuits()

    @property
    def shared(self) -> bool:
        """True when limits hold across replicas."""
        return self.backend is not self.local

    def available(self, now: float) -> bool:
        """Whether the shared backend is believed reachable (its circuit closed, or half-open with no probe out)."""
        return SHARED not in self.circuit.blocked(now, OPEN_S)

    async def admit(self, limits: Limits, reservation: str, now: float, on_unavailable: str) -> tuple[Admission,
                                                                                                        Backend]:
        """Admit against the shared backend; when it is away, locally or not at all, as the policy says."""
        if self.shared and self.available(now) and self.circuit.admit(SHARED) is not None:
            try:
                admission = await self.backend.admit(limits, reservation, now)
            except StateError as exc:
                self._failed("admit", exc, now)
            else:
                self.circuit.success(SHARED)
                return admission, self.backend
            finally:
                self.circuit.release(SHARED)  # a probe that neither failed nor succeeded (cancelled) frees its slot
        if self.shared and on_unavailable == "fail_closed":
            raise FailClosed("the shared state (Redis) is unavailable; requests with budgets or rate limits "
                             "are refused until it returns (state.on_unavailable: fail_closed)")
        return await self.local.admit(limits, reservation, now), self.local

    async def settle(self, backend: Backend, limits: Limits, admission: Admission, charge: Charge,
                     now: float) -> None:
        """Record what a request cost where it was admitted; a failure is counted, never raised."""
        try:
            await backend.settle(limits, admission, charge, now)
        except StateError as exc:
            self._failed("settle", exc, now)

    async def spend(self, tenant: str, window: str, now: float) -> Spend:
        """Spend as the shared backend has it (StateError when it is away)."""
        return await self.backend.spend(tenant, window, now)

    def _failed(self, op: str, exc: StateError, now: float) -> None:
        self.metrics.count(self.metrics.state_errors, self.backend.name, op)
        self.circuit.failure(SHARED, now, FAILURES_TO_OPEN)
        logger.warning("state backend %s failed on %s: %s", self.backend.name, op, exc)
