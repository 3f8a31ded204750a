"""The shared-state interface: admit a request against its tenant's limits, settle what it cost, read spend back.

Money is counted in integer nano-dollars so that replicas adding up costs agree to the cent and beyond.
Windows are UTC: a day from midnight, a month from the first. Every amount and count is held within
[0, MOST] (savings, a net amount, within [-MOST, MOST]): MOST is 2**53 - 1, the largest integer Redis' Lua
numbers hold exactly, so no counter can overflow or go negative whatever an upstream reports.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from gateway.values import value

NANO = 1_000_000_000
MINUTE_MS = 60_000
RESERVATION_TTL_MS = 15 * MINUTE_MS
WINDOWS = ("day", "month")


MOST = 2**53 - 1  # nano-dollars (about $9 million) or tokens: the bound of every counter


def bounded(value: int, least: int = 0) -> int:
    """value held within [least, MOST]."""
    return value if least <= value <= MOST else max(least, min(MOST, value))  # the test first: called a dozen times


def to_nano(usd: float) -> int:
    """USD as integer nano-dollars, held within [-MOST, MOST] (not a number counts as 0)."""
    nano = usd * NANO
    if -MOST <= nano <= MOST:
        return round(nano)
    if nano != nano:  # NaN
        return 0
    return round(max(-MOST, min(MOST, nano)))


def period(window: str, now: float) -> str:
    """The UTC period a window is in at now: '2026-11-25' for a day, '2026-11' for a month."""
    moment = dt.datetime.fromtimestamp(now, dt.UTC)
    return moment.strftime("%Y-%m-%d" if window == "day" else "%Y-%m")


def resets_at(window: str, now: float) -> float:
    """When the window's current period ends (epoch seconds)."""
    moment = dt.datetime.fromtimestamp(now, dt.UTC)
    start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if window == "day":
        return (start + dt.timedelta(days=1)).timestamp()
    first = start.replace(day=1)
    following = (first + dt.timedelta(days=32)).replace(day=1)
    return following.timestamp()


@value
class Limits:
    """What one request must be admitted against."""

    tenant: str
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    tokens: int = 0
    budgets: tuple[tuple[str, int], ...] = ()  # (window, limit in nano-dollars)
    cost: int = 0  # estimated cost to reserve, nano-dollars

    @property
    def empty(self) -> bool:
        """Nothing to check."""
        return self.requests_per_minute is None and self.tokens_per_minute is None and not self.budgets

    def bounded(self) -> Limits:
        """These limits with every number held within [0, MOST], as the backends count them (self when they are)."""
        rpm, tpm = self.requests_per_minute, self.tokens_per_minute
        for _, limit in self.budgets:  # a loop, not all(): this runs twice a request
            if not 0 <= limit <= MOST:
                break
        else:
            if (0 <= self.cost <= MOST and 0 <= self.tokens <= MOST and (rpm is None or 0 <= rpm <= MOST)
                    and (tpm is None or 0 <= tpm <= MOST)):
                return self

        def most(value: int | None) -> int | None:
            return None if value is None else bounded(value)
        return Limits(self.tenant, most(self.requests_per_minute), most(self.tokens_per_minute), bounded(self.tokens),
                      tuple((window, bounded(limit)) for window, limit in self.budgets), bounded(self.cost))


class Rate(NamedTuple):
    """One rate limit as this request left it: how much is left, and how long until all of it is again."""

    remaining: int
    reset_s: float


@value
class Admission:
    """The answer to admit: yes with a reservation, or no with the limit that said so."""

    ok: bool
    reservation: str = ""
    limit: str = ""  # "requests_per_minute" | "tokens_per_minute" | "day" | "month"
    retry_after_s: float = 0.0
    remaining: Mapping[str, int] = field(default_factory=dict)  # window -> nano-dollars left
    bucket: int = 0  # the second the tokens were counted in
    rates: Mapping[str, Rate] = field(default_factory=dict)  # "requests", "tokens" -> what is left of each limit


@value
class Charge:
    """What a request cost once it is done (all zero when it failed: the reservation is released)."""

    upstream: str = ""
    cost: int = 0
    tokens: int = 0
    savings: int = 0

    def bounded(self) -> Charge:
        """This charge with cost and tokens within [0, MOST] and savings within [-MOST, MOST] (self when they are)."""
        if 0 <= self.cost <= MOST and 0 <= self.tokens <= MOST and -MOST <= self.savings <= MOST:
            return self
        return Charge(self.upstream, bounded(self.cost), bounded(self.tokens), bounded(self.savings, -MOST))


@dataclass
class Spend:
    """Spend in one window period, as read back."""

    tenant: str
    window: str
    period: str
    spent: int = 0
    reserved: int = 0
    savings: int = 0
    upstreams: dict[str, dict[str, int]] = field(default_factory=dict)  # name -> {cost, tokens, requests}


class StateError(Exception):
    """The shared state could not be reached or did not answer in time."""


class FailClosed(Exception):
    """The shared state is away and the policy says to refuse what it would have checked (on_unavailable)."""


class Backend(Protocol):
    """A place limits and spend live: this process (memory) or shared (redis)."""

    name: str

    async def admit(self, limits: Limits, reservation: str, now: float) -> Admission:
        """Check every limit and, only if all pass, count the request and reserve its cost, atomically."""

    async def settle(self, limits: Limits, admission: Admission, charge: Charge, now: float) -> None:
        """Turn a reservation into spend (or release it), and correct the token count."""

    async def spend(self, tenant: str, window: str, now: float) -> Spend:
        """Spend, reservations and savings of tenant in window's current period."""

    async def close(self) -> None:
        """Release connections."""
