"""When an upstream counts as full: the threshold, counting between readings, hysteresis, stale readings."""

from __future__ import annotations

from gateway.routing.capacity.gauge import KV_BAND, Gauge
from gateway.routing.capacity.signals import Reading
from gateway.routing.policy.schema import Capacity


def gauge(**spec: object) -> Gauge:
    fields: dict[str, object] = {"engine": "vllm", "max_waiting": 4, "poll_ms": 500, "stale_ms": 3000}
    fields.update(spec)
    return Gauge(Capacity.model_validate(fields))


def test_full_once_the_queue_is_longer_than_max_waiting() -> None:
    g = gauge()
    g.update(Reading(4, 8, 0.1), 0.0)
    assert not g.full(0.1)
    g.update(Reading(5, 8, 0.1), 0.5)
    assert g.full(0.6)


def test_requests_sent_since_the_reading_count_so_a_burst_does_not_overshoot() -> None:
    g = gauge()
    g.update(Reading(2, 8, 0.1), 0.0)
    sent_to_it = 0
    for _ in range(10):  # a burst within one poll interval
        if not g.full(0.1):
            g.count_sent()
            sent_to_it += 1
    assert sent_to_it == 3  # 2 waiting + 3 sent = 5 > 4: the rest go elsewhere
    assert g.full(0.1)


def test_a_fresh_reading_replaces_the_count() -> None:
    g = gauge()
    g.update(Reading(0, 8, 0.1), 0.0)
    for _ in range(5):
        g.count_sent()
    assert g.full(0.1)
    g.update(Reading(1, 8, 0.1), 0.5)  # the engine took most of them at once
    assert g.sent == 0
    assert not g.full(0.6)


def test_a_reading_at_the_threshold_keeps_the_state_it_finds() -> None:
    g = gauge()
    g.update(Reading(4, 8, 0.1), 0.0)
    assert not g.full(0.0)  # open stays open at 4
    g.update(Reading(5, 8, 0.1), 0.5)
    g.update(Reading(4, 8, 0.1), 1.0)
    assert g.full(1.0)  # full stays full at 4: hovering at the threshold does not flap
    g.update(Reading(5, 8, 0.1), 1.5)
    g.update(Reading(4, 8, 0.1), 2.0)
    assert g.full(2.0)


def test_the_first_reading_under_the_threshold_brings_traffic_back() -> None:
    g = gauge()
    g.update(Reading(9, 8, 0.1), 0.0)
    assert g.full(0.0)
    g.update(Reading(3, 8, 0.1), 0.5)
    assert not g.full(0.5)


def test_max_waiting_zero_means_no_queue_and_comes_back_when_empty() -> None:
    g = gauge(max_waiting=0)
    g.update(Reading(0, 8, 0.1), 0.0)
    assert not g.full(0.0)
    g.count_sent()
    assert g.full(0.0)
    g.update(Reading(0, 8, 0.1), 0.5)
    assert not g.full(0.5)


def test_kv_cache_has_a_band_below_its_threshold() -> None:
    g = gauge(max_waiting=None, max_kv_cache=0.9)
    g.update(Reading(0, 8, 0.91), 0.0)
    assert g.full(0.0)
    g.update(Reading(0, 8, 0.9 - KV_BAND / 2), 0.5)
    assert g.full(0.5)
    g.update(Reading(0, 8, 0.9 - KV_BAND), 1.0)
    assert not g.full(1.0)


def test_a_stale_reading_is_unknown_and_when_unknown_decides() -> None:
    opened, closed = gauge(when_unknown="open"), gauge(when_unknown="full")
    for g in (opened, closed):
        assert g.full(0.0) == (g is closed)  # no reading yet
        g.update(Reading(9, 8, 0.1), 0.0)
        assert g.full(2.9)
        g.failed()
        g.failed()
        assert g.full(2.9)  # a failed poll leaves the last reading until it goes stale
    assert not opened.full(3.0)
    assert closed.full(3.0)
    assert "when_unknown: full" in closed.view(3.0).why


def test_the_view_says_why() -> None:
    g = gauge()
    g.update(Reading(5, 8, None), 0.0)
    g.update(Reading(4, 8, None), 0.5)
    view = g.view(0.6)
    assert view.full
    assert "held until a reading falls under" in view.why
    assert view.fields()["waiting"] == 4
