"""Live latency: p95 per upstream that follows change and forgets silence."""

from __future__ import annotations

import pytest

from gateway.state.latency import DecayingHistogram, LatencyTracker


def test_p95_is_within_a_bucket_of_the_truth() -> None:
    histogram = DecayingHistogram(half_life_s=60)
    for i in range(100):
        histogram.observe(100.0 + i, now=1.0)
    p95 = histogram.quantile(0.95, now=1.0)
    assert p95 is not None
    assert 190 <= p95 <= 195 * 1.1


def test_p95_follows_a_change_within_a_few_half_lives() -> None:
    tracker = LatencyTracker(half_life_s=10)
    for _ in range(200):
        tracker.observe("a", 0.1, now=0.0)
    assert tracker.view["a"] == pytest.approx(100, rel=0.1)
    for i in range(200):
        tracker.observe("a", 2.0, now=60.0 + i * 0.01)
    assert tracker.view["a"] == pytest.approx(2000, rel=0.1)


def test_an_upstream_with_only_old_samples_counts_as_unmeasured() -> None:
    tracker = LatencyTracker(half_life_s=10)
    tracker.observe("a", 0.5, now=0.0)
    assert "a" in tracker.view
    tracker.refresh(now=30.0)
    assert "a" not in tracker.view
