"""Metric updates on the request path are tallied and applied to prometheus_client at the next flush."""

from __future__ import annotations

from gateway.metrics import Metrics


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_counts_are_applied_at_the_next_flush() -> None:
    metrics = Metrics()
    metrics.count(metrics.requests, "chat", "a", "200")
    metrics.count(metrics.requests, "chat", "a", "200", amount=2)
    assert metrics._registry.get_sample_value("switchyard_requests_total",
                                              {"route": "chat", "upstream": "a", "status": "200"}) is None
    assert sample(metrics, "switchyard_requests_total", route="chat", upstream="a", status="200") == 3


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
