"""Circuit breakers with explicit clocks: closed, open after consecutive failures, one probe when half-open."""

from __future__ import annotations

import orjson
import pytest

from gateway.delivery.dispatch import Request, counts_against_circuit, is_small
from gateway.errors import (
    CircuitOpen,
    DeadlinePassed,
    Saturated,
    UpstreamError,
    UpstreamMalformed,
    UpstreamRedirect,
    UpstreamSilent,
    UpstreamStatus,
    UpstreamTimeout,
    UpstreamTooLarge,
    UpstreamUnavailable,
)
from gateway.routing.policy.schema import Circuit as CircuitSpec
from gateway.state.circuits import CLOSED, OPEN, Circuits, open_for

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


def probe_fails(circuits: Circuits, now: float) -> None:
    """Let the probe through at now and fail it."""
    assert circuits.blocked(now, OPEN_S, 5.0) == frozenset()
    assert circuits.admit("a") == "probe"
    assert circuits.failure("a", now, 3) == OPEN


def test_an_opening_lasts_first_open_s_then_twice_as_long_after_each_failed_probe_up_to_open_s() -> None:
    circuits = opened(at=100.0)
    now = 100.0
    for lasts in (5.0, 10.0, 20.0, 30.0, 30.0):  # first_open_s 5, doubled, held at open_s 30
        assert circuits.blocked(now + lasts - 0.001, OPEN_S, 5.0) == {"a"}
        now += lasts
        probe_fails(circuits, now)


def test_a_success_starts_the_openings_again_from_first_open_s() -> None:
    circuits = opened(at=100.0)
    probe_fails(circuits, 105.0)
    probe_fails(circuits, 115.0)  # the third opening would last 20 s
    assert circuits.blocked(135.0, OPEN_S, 5.0) == frozenset()
    assert circuits.admit("a") == "probe"
    assert circuits.success("a") == CLOSED
    for _ in range(3):
        circuits.failure("a", 200.0, 3)
    assert circuits.blocked(204.999, OPEN_S, 5.0) == {"a"}
    assert circuits.blocked(205.0, OPEN_S, 5.0) == frozenset()


def test_first_open_s_is_never_longer_than_open_s() -> None:
    assert open_for(1, 3.0, 5.0) == 3.0
    assert open_for(1, 30.0, None) == 30.0  # without first_open_s every opening lasts open_s
    assert open_for(100, 30.0, 5.0) == 30.0


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


# What counts against a circuit (gateway/delivery/dispatch.py decides; docs/operations.md says why)


def failure(kind: str) -> UpstreamError:
    status = {"http_500": 500, "http_501": 501, "http_503": 503, "http_429": 429, "http_400": 400}
    if kind in status:
        return UpstreamStatus("a", status[kind], b"{}", b"application/json")
    made: dict[str, UpstreamError] = {
        "connect": UpstreamUnavailable("a", "refused"), "silent": UpstreamSilent("a"),
        "timeout": UpstreamTimeout("a"), "deadline": DeadlinePassed("a"), "redirect": UpstreamRedirect("a", 307),
        "too_large": UpstreamTooLarge("a", "body", 10), "malformed": UpstreamMalformed("a", "br"),
        "saturated": Saturated("a"), "circuit_open": CircuitOpen("a")}
    return made[kind]


@pytest.mark.parametrize(("kind", "small", "counts"), [
    ("connect", False, True), ("silent", False, True), ("redirect", False, True), ("http_500", False, True),
    ("http_503", False, True), ("timeout", True, True),
    ("timeout", False, False), ("deadline", True, False), ("http_501", True, False), ("http_429", True, False),
    ("http_400", True, False), ("too_large", True, False), ("malformed", True, False), ("saturated", True, False),
    ("circuit_open", True, False)])
def test_what_counts_against_a_circuit(kind: str, small: bool, counts: bool) -> None:
    assert counts_against_circuit(failure(kind), small) is counts


def test_a_context_length_refusal_in_a_500_does_not_count() -> None:
    refused = UpstreamStatus("a", 500, b"{}", b"application/json")
    refused.kind = "context_length"
    assert not counts_against_circuit(refused, True)


@pytest.mark.parametrize(("path", "body", "stream", "small"), [
    ("/chat/completions", {"max_tokens": 100}, False, True),
    ("/chat/completions", {"max_tokens": 100, "n": 20}, False, False),  # 2,000 tokens in all
    ("/chat/completions", {"max_completion_tokens": 4000}, False, False),
    ("/chat/completions", {}, False, False),  # no cap: the answer may take as long as it likes
    ("/chat/completions", {}, True, True),  # a stream's first event does not wait for the answer
    ("/embeddings", {"input": "x"}, False, True),
    ("/chat/completions", {"max_tokens": 10, "pad": "x" * 20_000}, False, False),  # a big prompt
])
def test_which_requests_are_small(path: str, body: dict[str, object], stream: bool, small: bool) -> None:
    request = Request(path, body, {}, stream)
    assert is_small(request, orjson.dumps(body), CircuitSpec()) is small
