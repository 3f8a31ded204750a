"""The ledger with Redis away (a private redis-server shut down, or frozen with SIGSTOP): bounded calls, the
policy's fail_closed / local, a circuit, and service that resumes by itself with nothing counted twice."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import pytest

from gateway.operations.metrics import Metrics
from gateway.state.base import Charge, FailClosed, Limits, Spend, StateError
from gateway.state.ledger import FAILURES_TO_OPEN, OPEN_S, Ledger
from gateway.state.memory import MemoryBackend
from gateway.state.redis import RedisBackend

if TYPE_CHECKING:
    from tests.redis_server import RedisServer

pytest_plugins = ["tests.redis_server"]

TIMEOUT_S = 0.5  # each Redis call's bound: short, yet long enough for a loaded machine to answer a live Redis
BOUND_S = 4 * TIMEOUT_S  # no call may take longer while Redis is away (a hang would take forever)
LIMITS = Limits("acme", requests_per_minute=1000, budgets=(("day", 1000),), cost=100)
T = TypeVar("T")


@dataclass
class Outage:
    """Redis going away and coming back: shut down (its data saved and loaded again) or frozen and thawed."""

    how: str
    server: RedisServer

    def begin(self) -> None:
        if self.how == "stopped":
            self.server.stop(save=True)
        else:
            self.server.freeze()

    def end(self) -> None:
        if self.how == "stopped":
            self.server.start()
        else:
            self.server.thaw()


@pytest.fixture(params=["stopped", "frozen"])
def outage(request: pytest.FixtureRequest, own_redis: RedisServer) -> Outage:
    return Outage(request.param, own_redis)


@pytest.fixture
async def ledger(own_redis: RedisServer) -> AsyncIterator[Ledger]:
    made = Ledger(RedisBackend(own_redis.url(), timeout_s=TIMEOUT_S), Metrics())
    yield made
    own_redis.thaw()
    await made.backend.close()


async def bounded(call: Awaitable[T]) -> T:
    """Await call, failing the test if it takes longer than BOUND_S (whatever it raises is raised)."""
    started = time.perf_counter()
    try:
        return await call
    finally:
        assert time.perf_counter() - started <= BOUND_S, "a state call outlived its bound"


def errors(ledger: Ledger, op: str) -> float:
    return ledger.metrics.registry.get_sample_value("switchyard_state_errors_total",
                                                    {"backend": "redis", "op": op}) or 0.0


async def spend_when(ledger: Ledger, predicate: Callable[[Spend], bool], what: str, now: float) -> Spend:
    """Poll the shared spend (settlements are flushed in the background) until predicate holds."""
    deadline = time.monotonic() + 30
    spend = await ledger.spend("acme", "day", now)
    while not predicate(spend):
        assert time.monotonic() < deadline, f"timed out waiting for {what}: {spend}"
        await asyncio.sleep(0.005)
        spend = await ledger.spend("acme", "day", now)
    return spend


async def test_fail_closed_refuses_within_the_bound_and_counts_the_errors(ledger: Ledger, outage: Outage) -> None:
    now = time.time()
    admitted, backend = await ledger.admit(LIMITS, "before", now, "fail_closed")
    outage.begin()
    for i in range(FAILURES_TO_OPEN + 3):
        with pytest.raises(FailClosed) as refused:
            await bounded(ledger.admit(LIMITS, f"r{i}", now, "fail_closed"))
        assert "state.on_unavailable: fail_closed" in str(refused.value)
    assert errors(ledger, "admit") == FAILURES_TO_OPEN  # then the circuit opened: Redis was not asked again
    assert not ledger.available(now)
    with pytest.raises(StateError):
        await bounded(ledger.spend("acme", "day", now))
    await bounded(ledger.settle(backend, LIMITS, admitted, Charge("a", 90), now))


async def test_local_admits_against_this_processs_memory(ledger: Ledger, outage: Outage) -> None:
    now = time.time()
    outage.begin()
    admitted = []
    for i in range(10):
        admission, backend = await bounded(ledger.admit(LIMITS, f"r{i}", now, "local"))
        assert admission.ok
        assert backend is ledger.local
        admitted.append(admission)
    refused, _ = await bounded(ledger.admit(LIMITS, "over", now, "local"))  # the budget holds locally too
    assert (refused.ok, refused.limit) == (False, "day")
    for admission in admitted:
        await bounded(ledger.settle(ledger.local, LIMITS, admission, Charge("a", 90), now))
    local = await ledger.local.spend("acme", "day", now)
    assert (local.spent, local.reserved) == (900, 0)


async def test_service_resumes_by_itself_and_nothing_is_counted_twice(ledger: Ledger, outage: Outage) -> None:
    now = time.time()
    before, backend = await ledger.admit(LIMITS, "before", now, "fail_closed")
    assert backend is ledger.backend
    outage.begin()
    await bounded(ledger.settle(backend, LIMITS, before, Charge("a", 90, 9), now))  # queued: Redis is away
    for i in range(FAILURES_TO_OPEN):
        with pytest.raises(FailClosed):
            await bounded(ledger.admit(LIMITS, f"away{i}", now, "fail_closed"))
    assert not ledger.available(now)
    outage.end()
    later = now + OPEN_S
    assert ledger.available(later)
    after, backend = await bounded(ledger.admit(LIMITS, "after", later, "fail_closed"))
    assert after.ok
    assert backend is ledger.backend
    await spend_when(ledger, lambda s: s.spent == 90, "the queued settlement to arrive", later)
    await ledger.settle(backend, LIMITS, after, Charge("a", 110, 11), later)
    spend = await spend_when(ledger, lambda s: s.spent >= 200, "the second settlement", later)
    assert spend.spent == 200
    assert spend.upstreams == {"a": {"cost": 200, "tokens": 20, "requests": 2}}
    assert spend.reserved == 0


async def test_an_admission_that_timed_out_leaves_no_reservation_behind(ledger: Ledger,
                                                                        own_redis: RedisServer) -> None:
    now = time.time()
    warm = Limits("other", requests_per_minute=1000)  # a connection is open and the script loaded, as in service
    await ledger.admit(warm, "warm", now, "fail_closed")
    own_redis.freeze()
    with pytest.raises(FailClosed):
        await ledger.admit(LIMITS, "timed-out", now, "fail_closed")
    own_redis.thaw()
    admission, _ = await ledger.admit(LIMITS, "next", now + OPEN_S, "fail_closed")
    assert admission.remaining == {"day": 900}


async def test_a_circuit_keeps_redis_out_of_the_request_path_for_a_while(ledger: Ledger,
                                                                          own_redis: RedisServer) -> None:
    now = time.time()
    own_redis.freeze()  # each call waits for its timeout: the circuit spares the requests that
    for i in range(FAILURES_TO_OPEN):
        with pytest.raises(FailClosed):
            await ledger.admit(LIMITS, f"r{i}", now, "fail_closed")
    for i in range(20):  # Redis is frozen: a call that reached it would wait out its timeout and count an error
        with pytest.raises(FailClosed):
            await ledger.admit(LIMITS, f"open{i}", now + OPEN_S * 0.9, "fail_closed")
    assert errors(ledger, "admit") == FAILURES_TO_OPEN
    with pytest.raises(FailClosed):  # half-open: Redis is tried again, and fails again
        await ledger.admit(LIMITS, "probe", now + OPEN_S, "fail_closed")
    assert errors(ledger, "admit") == FAILURES_TO_OPEN + 1


async def test_a_memory_ledger_has_nothing_to_lose() -> None:
    ledger = Ledger(MemoryBackend(), Metrics())
    assert not ledger.shared
    admission, backend = await ledger.admit(LIMITS, "r", time.time(), "fail_closed")
    assert admission.ok
    assert backend is ledger.backend is ledger.local
