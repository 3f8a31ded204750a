"""One upstream's fullness: its last reading, what was sent since, and the hysteresis between them.

The rule (docs/capacity.md): an upstream turns full when its reading's queue plus the requests this replica
sent it since that reading is longer than `max_waiting`, or its KV cache is fuller than `max_kv_cache`.
It stays full until a reading shows a queue shorter than `max_waiting` (or empty) and a KV cache at least
KV_BAND below `max_kv_cache`: a reading that sits at the threshold keeps whichever state the upstream was in.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.routing.capacity.signals import Reading
from gateway.routing.policy.schema import Capacity

KV_BAND = 0.02  # how far under max_kv_cache a reading must be to bring traffic back


@dataclass(frozen=True, slots=True)
class View:
    """What the audit trail and `policy explain` show of one upstream's load."""

    full: bool
    why: str
    reading: Reading | None
    sent: int
    age_ms: float | None

    def fields(self) -> dict[str, object]:
        """The view as an audit record holds it."""
        reading = self.reading
        return {"full": self.full, "why": self.why, "sent_since_reading": self.sent,
                "age_ms": None if self.age_ms is None else round(self.age_ms, 1),
                "waiting": reading.waiting if reading else None, "running": reading.running if reading else None,
                "kv_cache": reading.kv_cache if reading else None}


class Gauge:
    """Whether one upstream is full now; fed readings by its poller, read by every decision."""

    def __init__(self, spec: Capacity) -> None:
        self.spec = spec
        self.reading: Reading | None = None
        self.read_at = 0.0
        self.sent = 0
        self.latched = False
        self.failures = 0

    def update(self, reading: Reading, now: float) -> None:
        """Take a fresh reading (at monotonic time now); requests sent before it are in it."""
        self.reading, self.read_at, self.sent, self.failures = reading, now, 0, 0
        if self._over(reading, 0):
            self.latched = True
        elif self.latched and self._under(reading):
            self.latched = False

    def failed(self) -> None:
        """Count a poll that got no reading; the last reading stays until it goes stale."""
        self.failures += 1

    def count_sent(self) -> None:
        """Count one request sent to the upstream since the last reading."""
        self.sent += 1

    def fresh(self, now: float) -> bool:
        """Whether the last reading is younger than stale_ms."""
        return self.reading is not None and (now - self.read_at) * 1000 < self.spec.stale_ms

    def full(self, now: float) -> bool:
        """Whether decisions should move this upstream behind the others now."""
        if self.reading is None or not self.fresh(now):
            return self.spec.when_unknown == "full"
        if not self.latched and self._over(self.reading, self.sent):
            self.latched = True
        return self.latched

    def view(self, now: float) -> View:
        """The state and the reading behind it."""
        full = self.full(now)
        age = None if self.reading is None else (now - self.read_at) * 1000
        if self.reading is None or not self.fresh(now):
            why = f"no fresh reading; when_unknown: {self.spec.when_unknown}"
        else:
            why = self._why(self.reading, full)
        return View(full, why, self.reading, self.sent, age)

    def _over(self, reading: Reading, sent: int) -> bool:
        spec = self.spec
        queue = spec.max_waiting is not None and reading.waiting + sent > spec.max_waiting
        cache = spec.max_kv_cache is not None and reading.kv_cache is not None and reading.kv_cache > spec.max_kv_cache
        return queue or cache

    def _under(self, reading: Reading) -> bool:
        spec = self.spec
        queue = spec.max_waiting is None or reading.waiting < spec.max_waiting or reading.waiting == 0
        cache = (spec.max_kv_cache is None or reading.kv_cache is None
                 or reading.kv_cache <= spec.max_kv_cache - KV_BAND)
        return queue and cache

    def _why(self, reading: Reading, full: bool) -> str:
        spec = self.spec
        parts = []
        if spec.max_waiting is not None:
            parts.append(f"queue {reading.waiting:g} + {self.sent} sent vs max_waiting {spec.max_waiting}")
        if spec.max_kv_cache is not None and reading.kv_cache is not None:
            parts.append(f"kv cache {reading.kv_cache:.2f} vs max_kv_cache {spec.max_kv_cache}")
        held = " (held until a reading falls under the threshold)" if full and not self._over(reading, self.sent) \
            else ""
        return f"{'full' if full else 'open'}: {', '.join(parts) or 'no signal reported'}{held}"
