"""gateway.pipeline.settle: what a request cost is settled where it was admitted, and counted and audited."""

from __future__ import annotations

import time
from pathlib import Path

import orjson

from gateway.accounting.usage import Usage
from gateway.operations.audit import AuditLog, Seal, sinks_for
from gateway.operations.metrics import Metrics
from gateway.pipeline.record import Record
from gateway.pipeline.settle import Settler
from gateway.state.base import NANO, Limits
from gateway.state.ledger import Ledger
from gateway.state.memory import MemoryBackend
from tests.pipeline.policies import policy

LIMITS = Limits("acme", budgets=(("day", NANO),), cost=NANO // 1000)


def settler(metrics: Metrics, audit_to: tuple[str, ...] = ()) -> Settler:
    audit = AuditLog(sinks_for(audit_to, Seal(None)), metrics, Seal(None))
    return Settler(metrics, Ledger(MemoryBackend(), metrics), audit)


async def served(stage: Settler) -> Record:
    record = Record("r", "h", "chat")
    record.tenant, record.route, record.status = "acme", "chat", 200
    record.admission, record.backend = await stage.ledger.admit(LIMITS, "res-1", time.time(), "fail_closed")
    return record


async def test_a_served_request_is_spent_at_its_cost_and_its_reservation_released(tmp_path: Path) -> None:
    stage = settler(Metrics())
    record = await served(stage)
    record.upstream = "primary"
    record.charge(Usage(100, 50), 0.0002)
    await stage.settle(policy(tmp_path), LIMITS, record)
    spend = await stage.ledger.local.spend("acme", "day", time.time())
    assert (spend.spent, spend.reserved) == (200_000, 0)
    assert spend.upstreams["primary"]["requests"] == 1


async def test_a_request_refused_before_any_upstream_settles_nothing(tmp_path: Path) -> None:
    stage = settler(Metrics())
    await stage.settle(policy(tmp_path), LIMITS, Record("r", "h", "chat"))
    spend = await stage.ledger.local.spend("acme", "day", time.time())
    assert (spend.spent, spend.reserved, spend.upstreams) == (0, 0, {})


async def test_a_finished_request_is_counted_and_audited(tmp_path: Path) -> None:
    metrics = Metrics()
    stage = settler(metrics, (str(tmp_path / "audit.jsonl"),))
    record = Record("req-9", "h", "embeddings")
    record.tenant, record.status, record.excluded = "acme", 404, (("fallback", "residency"),)
    stage.finish(record, 0.002)
    metrics.flush()
    assert metrics.registry.get_sample_value("switchyard_requests_total", {
        "tenant": "acme", "endpoint": "embeddings", "route": "unknown", "upstream": "none", "status": "404"}) == 1
    assert metrics.registry.get_sample_value("switchyard_candidates_excluded_total", {
        "route": "unknown", "upstream": "fallback", "reason": "residency"}) == 1
    await stage.audit.flush()
    stage.audit.close()
    line = orjson.loads((tmp_path / "audit.jsonl").read_text().splitlines()[-1])  # after the file's anchor
    assert (line["request_id"], line["outcome"], line["excluded"]) == (
        "req-9", "error:http_404", [{"upstream": "fallback", "reason": "residency"}])

