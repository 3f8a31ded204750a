"""A state backend under test, memory or Redis (a private redis-server), and the time the test says it is.

Memory takes `now` as given. Redis keeps its own clock for rate windows and reservation expiry (TIME in the
Lua script, so replicas agree) and takes `now` only for the UTC period names; there, moving time on means ageing
what Redis stored by the same amount. `Rig.advance` does whichever the backend needs.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from dataclasses import dataclass, field

import redis.asyncio as aioredis

from gateway.state.base import Admission, Backend, Charge, Limits, Spend
from gateway.state.redis import RedisBackend

NOON = dt.datetime(2026, 11, 25, 12, 0, 0, tzinfo=dt.UTC).timestamp()
TENANT = "acme"


def at(*moment: int) -> float:
    """Epoch seconds of a UTC moment."""
    return dt.datetime(*moment, tzinfo=dt.UTC).timestamp()


@dataclass
class Rig:
    """A backend, the time the test says it is, and (for Redis) a raw client to age stored state with."""

    backend: Backend
    raw: aioredis.Redis | None
    now: float = NOON
    started: float = field(default_factory=time.monotonic)

    def slack(self, rounding: float = 0.5) -> float:
        """How far a wait Redis computes may be off: rounding, plus the real time the test took (Redis's clock ran)."""
        return rounding + (time.monotonic() - self.started if self.raw is not None else 0.0)

    async def admit(self, limits: Limits, reservation: str | None = None) -> Admission:
        return await self.backend.admit(limits, reservation or os.urandom(8).hex(), self.now)

    async def settle(self, limits: Limits, admission: Admission, charge: Charge) -> None:
        await self.backend.settle(limits, admission, charge, self.now)
        if isinstance(self.backend, RedisBackend):
            await self.backend.flush()

    async def spend(self, window: str = "day", tenant: str = TENANT) -> Spend:
        return await self.backend.spend(tenant, window, self.now)

    async def advance(self, seconds: int) -> None:
        """Move time on by whole seconds: `now` for memory; for Redis, age every stored time by as much."""
        self.now += seconds
        if self.raw is None:
            return
        shift = seconds * 1000
        async for key in self.raw.scan_iter(match="sy:*"):
            kind = await self.raw.type(key)
            if kind == b"zset":  # the request window and the reservations' expiry, in ms
                scored = await self.raw.zrange(key, 0, -1, withscores=True)
                if scored:
                    await self.raw.zadd(key, {member: score - shift for member, score in scored})
            elif kind == b"hash" and key.endswith(b":tpm"):  # tokens counted per second
                buckets = await self.raw.hgetall(key)
                await self.raw.delete(key)
                if buckets:
                    await self.raw.hset(key, mapping={int(b) - seconds: v for b, v in buckets.items()})


def rpm(limit: int) -> Limits:
    return Limits(TENANT, requests_per_minute=limit)


def tpm(limit: int, tokens: int) -> Limits:
    return Limits(TENANT, tokens_per_minute=limit, tokens=tokens)


def budget(cost: int, **limits: int) -> Limits:
    """A request of estimated cost (nano-dollars) against budgets given as day=..., month=..."""
    return Limits(TENANT, budgets=tuple(limits.items()), cost=cost)
