"""Metric updates on the request path are tallied and applied to prometheus_client at the next flush."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.metrics import MULTIPROC_ENV, Metrics, prepare_multiprocess


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_counts_are_applied_at_the_next_flush() -> None:
    metrics = Metrics()
    metrics.count(metrics.requests, "acme", "chat", "chat", "a", "200")
    metrics.count(metrics.requests, "acme", "chat", "chat", "a", "200", amount=2)
    labels = {"tenant": "acme", "endpoint": "chat", "route": "chat", "upstream": "a", "status": "200"}
    assert metrics._registry.get_sample_value("switchyard_requests_total", labels) is None
    assert sample(metrics, "switchyard_requests_total", tenant="acme", endpoint="chat", route="chat", upstream="a",
                  status="200") == 3


def test_a_gauge_moved_up_and_down_between_flushes_shows_its_net_value() -> None:
    metrics = Metrics()
    metrics.count(metrics.inflight, "a")
    metrics.count(metrics.inflight, "a", amount=-1)
    assert sample(metrics, "switchyard_inflight_requests", upstream="a") == 0  # shown, though it nets zero
    metrics.count(metrics.inflight, "a")
    metrics.count(metrics.inflight, "a")
    metrics.flush()
    metrics.count(metrics.inflight, "a", amount=-1)
    assert sample(metrics, "switchyard_inflight_requests", upstream="a") == 1


def test_the_last_value_set_between_flushes_wins() -> None:
    metrics = Metrics()
    metrics.set(metrics.budget_remaining, 5.0, "acme", "day")
    metrics.set(metrics.budget_remaining, 4.5, "acme", "day")
    assert sample(metrics, "switchyard_budget_remaining_usd", tenant="acme", window="day") == 4.5


def test_observations_land_in_their_buckets() -> None:
    metrics = Metrics()
    for seconds in (0.004, 0.004, 2.0):
        metrics.observe(metrics.duration, seconds, "chat", "a")
    labels = {"route": "chat", "upstream": "a"}
    assert sample(metrics, "switchyard_request_duration_seconds_count", **labels) == 3
    assert sample(metrics, "switchyard_request_duration_seconds_sum", **labels) == 2.008
    assert sample(metrics, "switchyard_request_duration_seconds_bucket", **labels, le="+Inf") == 3


@pytest.fixture
def multiproc_env() -> Iterator[None]:
    """prepare_multiprocess sets PROMETHEUS_MULTIPROC_DIR for this process: take it away after the test."""
    assert MULTIPROC_ENV not in os.environ
    yield
    os.environ.pop(MULTIPROC_ENV, None)


@pytest.mark.usefixtures("multiproc_env")
def test_a_metrics_folder_holding_other_files_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    (tmp_path / "report.pdf").write_text("not ours")
    (tmp_path / "counter_1.db").write_text("looks like ours, but the folder was never marked")
    with pytest.raises(ValueError, match=r"holds files the gateway did not write \(counter_1.db, report.pdf\)"):
        prepare_multiprocess(str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["counter_1.db", "report.pdf"]


@pytest.mark.usefixtures("multiproc_env")
def test_a_metrics_folder_is_emptied_of_an_earlier_run_s_files_only(tmp_path: Path) -> None:
    folder = tmp_path / "metrics"
    prepare_multiprocess(str(folder))  # made and marked
    (folder / "counter_123.db").write_bytes(b"\0" * 8)
    (folder / "gauge_livesum_123.db").write_bytes(b"\0" * 8)
    prepare_multiprocess(str(folder))
    assert [p.name for p in folder.iterdir()] == [".switchyard-metrics"]
    (folder / "notes.txt").write_text("someone else's")
    with pytest.raises(ValueError, match=r"notes\.txt"):
        prepare_multiprocess(str(folder))
    assert (folder / "notes.txt").exists()
