"""Live time-to-first-token per upstream: a decaying histogram, so p95 follows change within minutes."""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping
from types import MappingProxyType

# Bucket upper bounds in ms, 10% apart from 1 ms to about 2 minutes.
BOUNDS = tuple(round(1.1**i, 3) for i in range(123))
MIN_WEIGHT = 0.5


class DecayingHistogram:
    """Counts per latency bucket, each sample's weight halving every half_life_s."""

    __slots__ = ("_counts", "_half_life_s", "_stamp")

    def __init__(self, half_life_s: float) -> None:
        self._half_life_s = half_life_s
        self._counts = [0.0] * (len(BOUNDS) + 1)
        self._stamp = 0.0

    def observe(self, ms: float, now: float) -> None:
        """Add one sample taken at now (seconds, monotonic)."""
        self._decay(now)
        self._counts[bisect.bisect_left(BOUNDS, ms)] += 1.0

    def quantile(self, q: float, now: float) -> float | None:
        """The q-quantile in ms (a bucket's upper bound), or None when the samples have decayed away."""
        self._decay(now)
        total = sum(self._counts)
        if total < MIN_WEIGHT:
            return None
        target, running = q * total, 0.0
        for i, count in enumerate(self._counts):
            running += count
            if running >= target:
                return BOUNDS[min(i, len(BOUNDS) - 1)]
        return BOUNDS[-1]

    def _decay(self, now: float) -> None:
        elapsed = now - self._stamp
        if elapsed <= 0:
            return
        factor = math.pow(0.5, elapsed / self._half_life_s)
        self._counts = [c * factor for c in self._counts] if factor > 1e-6 else [0.0] * len(self._counts)
        self._stamp = now


class LatencyTracker:
    """p95 time to first token per upstream from this process's traffic, refreshed on each sample."""

    def __init__(self, half_life_s: float = 60.0) -> None:
        self._half_life_s = half_life_s
        self._histograms: dict[str, DecayingHistogram] = {}
        self._p95: dict[str, float] = {}
        self.view: Mapping[str, float] = MappingProxyType(self._p95)

    def observe(self, upstream: str, seconds: float, now: float) -> None:
        """Record one time to first token."""
        histogram = self._histograms.get(upstream)
        if histogram is None:
            histogram = self._histograms[upstream] = DecayingHistogram(self._half_life_s)
        histogram.observe(seconds * 1000, now)
        self._refresh(upstream, histogram, now)

    def refresh(self, now: float) -> None:
        """Let every upstream's p95 decay to now; one with no recent samples counts as unmeasured again."""
        for upstream, histogram in self._histograms.items():
            self._refresh(upstream, histogram, now)

    def _refresh(self, upstream: str, histogram: DecayingHistogram, now: float) -> None:
        p95 = histogram.quantile(0.95, now)
        if p95 is None:
            self._p95.pop(upstream, None)
        else:
            self._p95[upstream] = p95
