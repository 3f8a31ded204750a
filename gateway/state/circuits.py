"""Circuit breakers per upstream: closed, open after consecutive failures, half-open for one probe.

An opening lasts first_open_s, and twice as long after each probe that failed, up to open_s: an upstream that
blipped is back within seconds, one that stays down is probed at most once every open_s.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

CLOSED, HALF_OPEN, OPEN = 0, 1, 2
STATE_NAMES = {CLOSED: "closed", HALF_OPEN: "half_open", OPEN: "open"}


@dataclass
class Circuit:
    """One upstream's breaker."""

    failures: int = 0
    state: int = CLOSED
    opened_at: float = 0.0
    probing: bool = False
    openings: int = 0  # times opened since the last success: each doubles how long the next lasts


def open_for(openings: int, open_s: float, first_open_s: float | None) -> float:
    """How long the circuit stays open after its openings-th opening in a row."""
    first = open_s if first_open_s is None else min(first_open_s, open_s)
    return min(open_s, first * float(2 ** min(max(openings - 1, 0), 32)))


class Circuits:
    """Every upstream's breaker in this process; the clock is handed in, never read.

    on_change hears every change of state (for the circuit-state gauge).
    """

    def __init__(self, on_change: Callable[[str, int], None] | None = None) -> None:
        self._circuits: dict[str, Circuit] = {}
        self._open: frozenset[str] = frozenset()
        self._on_change = on_change or (lambda name, state: None)

    def blocked(self, now: float, open_s: float, first_open_s: float | None = None) -> frozenset[str]:
        """Upstreams a decision must leave out now: open ones, and half-open ones whose probe is out.

        An open circuit turns half-open after open_for(its openings, open_s, first_open_s); first_open_s None:
        always open_s."""
        if not self._open:
            return self._open
        changed = False
        for name in self._open:
            circuit = self._circuits[name]
            if circuit.state == OPEN and now - circuit.opened_at >= open_for(circuit.openings, open_s, first_open_s):
                circuit.state = HALF_OPEN
                self._on_change(name, HALF_OPEN)
                changed = True
        if changed:  # the same set object otherwise, so callers can tell nothing moved
            self._open = frozenset(n for n, c in self._circuits.items()
                                   if c.state == OPEN or (c.state == HALF_OPEN and c.probing))
        return self._open

    def admit(self, name: str) -> Literal["pass", "probe"] | None:
        """Claim the attempt: "pass" when closed, "probe" for the one half-open probe, None when blocked."""
        circuit = self._circuits.get(name)
        if circuit is None or circuit.state == CLOSED:
            return "pass"
        if circuit.state == HALF_OPEN and not circuit.probing:
            circuit.probing = True
            self._open = self._open | {name}
            return "probe"
        return None

    def success(self, name: str) -> int | None:
        """Record a good answer; returns the new state when it changed."""
        circuit = self._circuits.get(name)
        if circuit is None or (circuit.state == CLOSED and circuit.failures == 0):
            return None
        changed = circuit.state != CLOSED
        self._circuits[name] = Circuit()
        self._open = self._open - {name}
        if changed:
            self._on_change(name, CLOSED)
        return CLOSED if changed else None

    def failure(self, name: str, now: float, threshold: int) -> int | None:
        """Record a failure; returns the new state when it changed."""
        circuit = self._circuits.setdefault(name, Circuit())
        circuit.failures += 1
        if circuit.state == HALF_OPEN or (circuit.state == CLOSED and circuit.failures >= threshold):
            circuit.state, circuit.opened_at, circuit.probing = OPEN, now, False
            circuit.openings += 1
            self._open = self._open | {name}
            self._on_change(name, OPEN)
            return OPEN
        return None

    def release(self, name: str) -> None:
        """Free the probe slot of a probe that ended with neither success nor failure (the client left)."""
        circuit = self._circuits.get(name)
        if circuit is not None and circuit.state == HALF_OPEN:
            circuit.probing = False
            self._open = self._open - {name}

    def states(self) -> dict[str, str]:
        """Each known upstream's state by name, for /readyz."""
        return {name: STATE_NAMES[c.state] for name, c in self._circuits.items()}
