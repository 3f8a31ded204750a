"""The rig fixture: each state test that takes it runs once on memory and once on Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from gateway.state.memory import MemoryBackend
from gateway.state.redis import RedisBackend
from tests.state.rig import Rig


@pytest.fixture(params=["memory", "redis"])
async def rig(request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    if request.param == "memory":
        yield Rig(MemoryBackend(), None)
        return
    url = request.getfixturevalue("redis_url")
    backend = RedisBackend(url, timeout_s=5)  # these tests are not about timeouts: a loaded machine is slow
    raw = aioredis.Redis.from_url(url)
    try:
        yield Rig(backend, raw)
    finally:
        await backend.close()
        await raw.aclose()
