"""Circuit breakers with explicit clocks: closed, open after consecutive failures, one probe when half-open."""

from __future__ import annotations

import pytest

from gateway.state.circuits import CLOSED, OPEN, Circuits

OPEN_S = 30.0


def opened(threshold: int = 3, at: float = 100.0) -> Circuits:
    """A breaker for 'a' opened by threshold failures at time at."""
    circuits = Circuits()
    for _ in range(threshold):
        circuits.failure("a", at, threshold)
    return circuits


def test_an_unknown_upstream_is_closed_and_nothing_is_blocked() -> None:
    circuits = Circuits()
    assert circuits.blocked(0.0, OPEN_S) == frozenset()
    assert circuits.admit("a")
    assert circuits.success("a") is None
    assert circuits.states() == {}


@pytest.mark.parametrize("threshold", [1, 2, 5])
def test_the_circuit_opens_after_threshold_consecutive_failures(threshold: int) -> None:
    circuits = Circuits()
    for _ in range(threshold - 1):
        assert circuits.failure("a", 100.0, threshold) is None
        assert circuits.admit("a")
    assert circuits.blocked(100.0, OPEN_S) == frozenset()
    assert circuits.failure("a", 100.0, threshold) == OPEN
    assert circuits.blocked(100.0, OPEN_S) == {"a"}
    assert not circuits.admit("a")
    assert circuits.states() == {"a": "open"}


def test_a_success_resets_the_count_of_consecutive_failures() -> None:
    circuits = Circuits()
    circuits.failure("a", 1.0, 3)
    circuits.failure("a", 2.0, 3)
    assert circuits.success("a") is None  # still closed: no change of state to report
    assert circuits.failure("a", 3.0, 3) is None
    assert circuits.failure("a", 4.0, 3) is None
    assert circuits.blocked(4.0, OPEN_S) == frozenset()
    assert circuits.failure("a", 5.0, 3) == OPEN


def test_one_upstream_opening_leaves_the_others_alone() -> None:
    circuits = opened()
    circuits.failure("b", 100.0, 3)
    assert circuits.blocked(100.0, OPEN_S) == {"a"}
    assert circuits.admit("b")


def test_after_open_s_half_open_admits_exactly_one_probe() -> None:
    circuits = opened(at=100.0)
    assert circuits.blocked(100.0 + OPEN_S - 0.001, OPEN_S) == {"a"}
    assert not circuits.admit("a")
    assert circuits.blocked(100.0 + OPEN_S, OPEN_S) == frozenset()  # half-open: decisions may pick it again
    assert circuits.states() == {"a": "half_open"}
    assert circuits.admit("a")  # the probe
    assert not circuits.admit("a")
    assert circuits.blocked(100.0 + OPEN_S + 1, OPEN_S) == {"a"}  # while the probe is out, others skip it


def test_a_successful_probe_closes_the_circuit() -> None:
    circuits = opened(at=100.0)
    circuits.blocked(100.0 + OPEN_S, OPEN_S)
    assert circuits.admit("a")
    assert circuits.success("a") == CLOSED
    assert circuits.blocked(100.0 + OPEN_S, OPEN_S) == frozenset()
    assert circuits.admit("a")
    assert circuits.admit("a")
    assert circuits.states() == {"a": "closed"}
    assert circuits.failure("a", 200.0, 3) is None  # the count starts again from zero


def test_a_failed_probe_opens_the_circuit_again_for_a_full_open_s() -> None:
    circuits = opened(at=100.0)
    circuits.blocked(100.0 + OPEN_S, OPEN_S)
    assert circuits.admit("a")
    assert circuits.failure("a", 140.0, 3) == OPEN  # one failure is enough when half-open
    assert circuits.blocked(140.0, OPEN_S) == {"a"}
    assert not circuits.admit("a")
    assert circuits.blocked(140.0 + OPEN_S - 0.001, OPEN_S) == {"a"}
    assert circuits.blocked(140.0 + OPEN_S, OPEN_S) == frozenset()
    assert circuits.admit("a")


def test_release_frees_the_probe_of_an_attempt_that_ended_without_a_verdict() -> None:
    circuits = opened(at=100.0)
    circuits.blocked(100.0 + OPEN_S, OPEN_S)
    assert circuits.admit("a")
    circuits.release("a")  # the client left: neither success nor failure
    assert circuits.blocked(100.0 + OPEN_S + 1, OPEN_S) == frozenset()
    assert circuits.admit("a")  # a new probe
    assert not circuits.admit("a")


def test_release_does_not_touch_a_closed_or_open_circuit() -> None:
    circuits = opened(at=100.0)
    circuits.release("a")
    assert circuits.blocked(101.0, OPEN_S) == {"a"}
    assert not circuits.admit("a")
    fresh = Circuits()
    fresh.release("b")
    assert fresh.admit("b")
    assert fresh.states() == {}
