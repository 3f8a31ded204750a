"""gateway.pipeline.admit: the decision, and admission against a tenant's limits (refused, or degraded)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import NoCandidate, RateLimited, StateUnavailable
from gateway.inbound.openai import ENDPOINTS, OpenAIInbound
from gateway.operations.metrics import Metrics
from gateway.pipeline.admit import Admitter
from gateway.pipeline.inbound import Call
from gateway.pipeline.intake import Taken
from gateway.pipeline.record import Record
from gateway.pipeline.runtime import Runtime
from gateway.routing import classify
from gateway.routing.capacity.state import Capacity
from gateway.state.base import Backend
from gateway.state.circuits import Circuits
from gateway.state.latency import LatencyTracker
from gateway.state.ledger import Ledger
from gateway.state.memory import MemoryBackend
from gateway.state.redis import RedisBackend
from tests.pipeline.policies import runtime

BODY = {"model": "chat", "messages": [{"role": "user", "content": "Hello there"}], "max_tokens": 10}


def admitter(backend: Backend | None = None) -> Admitter:
    metrics = Metrics()
    return Admitter(metrics, Ledger(backend or MemoryBackend(), metrics), LatencyTracker(), Circuits(),
                    Capacity(metrics), audit_capacity=True)


def taken(running: Runtime, body: dict[str, Any] | None = None) -> Taken:
    body = body or dict(BODY)
    features = classify.features(running.policy, "acme", "chat", body, {})
    return Taken(Call(ENDPOINTS["/v1/chat/completions"], body, body), features)


async def test_an_unlimited_tenant_is_decided_without_the_ledger(tmp_path: Path) -> None:
    running, record = runtime(tmp_path), Record("r", "h", "chat")
    admitted = await admitter().admit(running, OpenAIInbound(), taken(running), record)
    assert admitted.decision.candidates == ("primary", "fallback")
    assert admitted.limits.empty
    assert (record.candidates, record.backend, record.rate_headers) == (("primary", "fallback"), None, [])


async def test_a_rate_limited_tenant_is_counted_then_refused_with_the_inbounds_headers(tmp_path: Path) -> None:
    running, stage, inbound = runtime(tmp_path, rate_limit={"requests_per_minute": 1}), admitter(), OpenAIInbound()
    first = Record("r1", "h", "chat")
    await stage.admit(running, inbound, taken(running), first)
    assert first.admission.ok
    assert dict(first.rate_headers)[b"x-ratelimit-remaining-requests"] == b"0"
    second = Record("r2", "h", "chat")
    with pytest.raises(RateLimited) as refused:
        await stage.admit(running, inbound, taken(running), second)
    assert (refused.value.kind, dict(refused.value.headers)[b"retry-after"]) == ("requests", b"60")
    assert dict(second.rate_headers)[b"x-ratelimit-limit-requests"] == b"1"


async def test_a_spent_budget_is_refused_or_degraded_as_the_policy_says(tmp_path: Path) -> None:
    refusing = runtime(tmp_path, budget={"usd_per_day": 0.000001})
    with pytest.raises(NoCandidate) as refused:
        await admitter().admit(refusing, OpenAIInbound(), taken(refusing), Record("r", "h", "chat"))
    assert refused.value.code == "budget_exhausted"
    degrading = runtime(tmp_path, budget={"usd_per_day": 0.000001, "when_exhausted": {"route_to": ["fallback"]}})
    record = Record("r", "h", "chat")
    admitted = await admitter().admit(degrading, OpenAIInbound(), taken(degrading), record)
    assert admitted.decision.candidates == ("fallback",)
    assert (admitted.limits.budgets, admitted.limits.cost) == ((), 0)


async def test_shared_state_away_under_fail_closed_is_503_state_unavailable(tmp_path: Path) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    backend = RedisBackend(f"redis://127.0.0.1:{port}", timeout_s=0.5)
    running = runtime(tmp_path, rate_limit={"requests_per_minute": 10})
    try:
        with pytest.raises(StateUnavailable) as refused:
            await admitter(backend).admit(running, OpenAIInbound(), taken(running), Record("r", "h", "chat"))
    finally:
        await backend.close()
    assert (refused.value.status, refused.value.code) == (503, "state_unavailable")
