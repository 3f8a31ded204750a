"""A retry budget: retries stay under a share of live traffic (Envoy's 20%), with a small floor."""

from __future__ import annotations

WINDOW_S = 10
RATIO = 0.2
FLOOR_PER_S = 1.0


class RetryBudget:
    """Counts requests and retries over the last WINDOW_S seconds in one-second buckets."""

    def __init__(self, ratio: float = RATIO, floor_per_s: float = FLOOR_PER_S, window_s: int = WINDOW_S) -> None:
        self.ratio = ratio
        self.floor = floor_per_s * window_s
        self._window = window_s
        self._requests = [0] * window_s
        self._retries = [0] * window_s
        self._second = 0

    def request(self, now: float) -> None:
        """Count one request."""
        self._requests[self._slot(now)] += 1

    def try_retry(self, now: float) -> bool:
        """Spend one retry if the budget allows it."""
        slot = self._slot(now)
        if sum(self._retries) + 1 > self.floor + self.ratio * sum(self._requests):
            return False
        self._retries[slot] += 1
        return True

    def _slot(self, now: float) -> int:
        second = int(now)
        if second != self._second:
            for stale in range(max(self._second + 1, second - self._window + 1), second + 1):
                self._requests[stale % self._window] = 0
                self._retries[stale % self._window] = 0
            self._second = second
        return second % self._window
