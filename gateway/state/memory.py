"""Limits and spend in this process: exact for one process, the default, and the fallback when Redis is away."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, replace

from gateway.state.base import (
    MINUTE_MS,
    MOST,
    RESERVATION_TTL_MS,
    Admission,
    Charge,
    Limits,
    Rate,
    Spend,
    bounded,
    period,
    resets_at,
)


@dataclass
class Period:
    """One tenant's spend in one window period."""

    spent: int = 0
    reserved: int = 0
    savings: int = 0
    reservations: dict[str, tuple[int, float]] = field(default_factory=dict)  # id -> (amount, expires at, ms)
    upstreams: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, upstream: str, charge: Charge) -> None:
        """Count what a request served by upstream cost.

        Every term is within [0, MOST] (bounded above), so only the upper side of each sum can pass its bound;
        the bounds are conditionals, not min(), as this runs twice a request.
        """
        spent = self.spent + charge.cost
        self.spent = spent if spent <= MOST else MOST
        if charge.savings:
            savings = self.savings + charge.savings
            self.savings = savings if -MOST <= savings <= MOST else (MOST if savings > 0 else -MOST)
        row = self.upstreams.get(upstream)
        if row is None:
            row = self.upstreams[upstream] = {"cost": 0, "tokens": 0, "requests": 0}
        cost, tokens, requests = row["cost"] + charge.cost, row["tokens"] + charge.tokens, row["requests"] + 1
        row["cost"] = cost if cost <= MOST else MOST
        row["tokens"] = tokens if tokens <= MOST else MOST
        row["requests"] = requests if requests <= MOST else MOST

    def purge(self, now_ms: float) -> None:
        """Release reservations whose holder never settled them (a crashed replica)."""
        for key, (amount, expires) in list(self.reservations.items()):
            if expires <= now_ms:
                self.reserved = bounded(self.reserved - amount)
                del self.reservations[key]


class MemoryBackend:
    """Sliding-window rate limits and reserved budgets in plain dictionaries; one process only."""

    name = "memory"

    def __init__(self) -> None:
        self._requests: dict[str, deque[float]] = {}
        self._tokens: dict[str, dict[int, int]] = {}
        self._periods: dict[tuple[str, str, str], Period] = {}
        self._names: tuple[int, str, str] = (-1, "", "")

    async def admit(self, limits: Limits, reservation: str, now: float) -> Admission:
        limits = limits.bounded()
        now_ms = now * 1000
        refused = self._rate_refusal(limits, now_ms) or self._budget_refusal(limits, now)
        if refused is not None:
            return replace(refused, rates=self._rates(limits, now_ms))
        if limits.requests_per_minute is not None:
            self._requests.setdefault(limits.tenant, deque()).append(now_ms)
        bucket = int(now)
        if limits.tokens_per_minute is not None:
            buckets = self._tokens.setdefault(limits.tenant, {})
            buckets[bucket] = bounded(buckets.get(bucket, 0) + limits.tokens)
        remaining = {}
        for window, limit in limits.budgets:
            state = self._period(limits.tenant, window, now)
            state.reserved = bounded(state.reserved + limits.cost)
            state.reservations[reservation] = (limits.cost, now_ms + RESERVATION_TTL_MS)
            remaining[window] = limit - state.spent - state.reserved
        return Admission(True, reservation, remaining=remaining, bucket=bucket, rates=self._rates(limits, now_ms))

    def _rates(self, limits: Limits, now_ms: float) -> dict[str, Rate]:
        """What is left of the tenant's rate limits, and when each is whole again (the sliding minute's end)."""
        rates = {}
        if limits.requests_per_minute is not None:
            times = self._requests.get(limits.tenant) or deque()
            reset = (times[-1] + MINUTE_MS - now_ms) / 1000 if times else 0.0
            rates["requests"] = Rate(max(0, limits.requests_per_minute - len(times)), max(0.0, reset))
        if limits.tokens_per_minute is not None:
            buckets = self._tokens.get(limits.tenant) or {}
            used = [b for b, tokens in buckets.items() if tokens > 0]
            reset = max(used) + 60 - now_ms / 1000 if used else 0.0
            rates["tokens"] = Rate(max(0, limits.tokens_per_minute - sum(buckets.values())), max(0.0, reset))
        return rates

    def _rate_refusal(self, limits: Limits, now_ms: float) -> Admission | None:
        rpm = limits.requests_per_minute
        if rpm is not None:
            times = self._requests.setdefault(limits.tenant, deque())
            while times and times[0] <= now_ms - MINUTE_MS:
                times.popleft()
            if len(times) >= rpm:
                return Admission(False, limit="requests_per_minute",
                                 retry_after_s=(times[len(times) - rpm] + MINUTE_MS - now_ms) / 1000)
        tpm = limits.tokens_per_minute
        if tpm is not None:
            buckets = self._tokens.setdefault(limits.tenant, {})
            second = int(now_ms // 1000)
            for old in [b for b in buckets if b <= second - 60]:
                del buckets[old]
            wait = _token_wait(buckets, limits.tokens, tpm, second)
            if wait is not None:
                return Admission(False, limit="tokens_per_minute", retry_after_s=wait)
        return None

    def _budget_refusal(self, limits: Limits, now: float) -> Admission | None:
        for window, limit in limits.budgets:
            state = self._period(limits.tenant, window, now)
            state.purge(now * 1000)
            if state.spent + state.reserved + limits.cost > limit:
                return Admission(False, limit=window, retry_after_s=resets_at(window, now) - now,
                                 remaining={window: max(0, limit - state.spent - state.reserved)})
        return None

    async def settle(self, limits: Limits, admission: Admission, charge: Charge, now: float) -> None:
        limits, charge = limits.bounded(), charge.bounded()
        upstream, reservation = charge.upstream, admission.reservation
        for state in self._periods_now(limits.tenant, now):
            if reservation and reservation in state.reservations:
                amount, _ = state.reservations.pop(reservation)
                reserved = state.reserved - amount
                state.reserved = reserved if reserved >= 0 else 0
            if upstream:
                state.add(upstream, charge)
        if limits.tokens_per_minute is not None and admission.ok:
            buckets = self._tokens.setdefault(limits.tenant, {})
            if admission.bucket in buckets:
                buckets[admission.bucket] = bounded(buckets[admission.bucket] + charge.tokens - limits.tokens)

    async def spend(self, tenant: str, window: str, now: float) -> Spend:
        state = self._period(tenant, window, now)
        state.purge(now * 1000)
        return Spend(tenant, window, period(window, now), state.spent, state.reserved, state.savings,
                     {name: dict(row) for name, row in state.upstreams.items()})

    async def close(self) -> None:
        return None

    def _period(self, tenant: str, window: str, now: float) -> Period:
        return self._periods_now(tenant, now)[0 if window == "day" else 1]

    def _periods_now(self, tenant: str, now: float) -> tuple[Period, Period]:
        """The tenant's periods of the day and of the month at now (WINDOWS' order): both looked up in one call, as
        every request settles both."""
        second, day, month = self._names
        if int(now) != second:
            second, day, month = self._names = (int(now), period("day", now), period("month", now))
        periods = self._periods
        daily, monthly = periods.get((tenant, "day", day)), periods.get((tenant, "month", month))
        if daily is None:
            daily = periods[(tenant, "day", day)] = Period()
        if monthly is None:
            monthly = periods[(tenant, "month", month)] = Period()
        return daily, monthly


def _token_wait(buckets: dict[int, int], tokens: int, limit: int, second: int) -> float | None:
    """Seconds until tokens fit under limit in the sliding minute, or None when they fit now."""
    used = sum(buckets.values())
    if used + tokens <= limit:
        return None
    if tokens > limit:
        return 60.0
    freed = 0
    for bucket in sorted(buckets):
        freed += buckets[bucket]
        if used - freed + tokens <= limit:
            return float(bucket + 60 - second)
    return 60.0
