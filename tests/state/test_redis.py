"""What only the Redis backend does: idempotent settlements, lost replies, keys that expire, scripts that bound."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from gateway.state.base import MOST, RESERVATION_TTL_MS, Charge, Limits, StateError
from gateway.state.redis import ADMIT, EXPIRE_S, SETTLE, RedisBackend
from gateway.state.redis_scripts import sha1
from gateway.state.resp import encode
from tests.state.rig import NOON, TENANT, Rig, budget, rpm, tpm

if TYPE_CHECKING:
    from tests.redis_server import RedisServer

pytest_plugins = ["tests.redis_server"]


@pytest.mark.parametrize("rig", ["redis"], indirect=True)
async def test_the_same_settlement_sent_twice_counts_once(rig: Rig) -> None:
    backend = rig.backend
    assert isinstance(backend, RedisBackend)
    limits = Limits(TENANT, tokens_per_minute=1000, tokens=100, budgets=(("day", 1000),), cost=300)
    admission = await rig.admit(limits)
    charge = Charge("a", cost=250, tokens=40, savings=10)
    await backend.settle(limits, admission, charge, rig.now)
    await backend.settle(limits, admission, charge, rig.now)  # a batch resent after its reply was lost
    await backend.flush()
    await backend.settle(limits, admission, charge, rig.now)
    await backend.flush()
    spend = await rig.spend()
    assert (spend.spent, spend.reserved, spend.savings) == (250, 0, 10)
    assert spend.upstreams == {"a": {"cost": 250, "tokens": 40, "requests": 1}}
    assert (await rig.admit(tpm(1000, tokens=960))).ok  # the token correction (100 -> 40) was applied once
    assert not (await rig.admit(tpm(1000, tokens=1))).ok


@pytest.mark.parametrize("rig", ["redis"], indirect=True)
async def test_settlements_are_flushed_in_the_background(rig: Rig) -> None:
    limits = budget(300, day=1000)
    await rig.backend.settle(limits, await rig.admit(limits), Charge("a", 250), rig.now)
    for _ in range(1000):  # polled for at most ~5 s; the flusher sends every ~10 ms
        spend = await rig.spend()
        if spend.spent == 250:
            break
        await asyncio.sleep(0.005)
    assert (spend.spent, spend.reserved) == (250, 0)


async def test_a_batch_of_settlements_resent_after_its_reply_was_lost_counts_once(own_redis: RedisServer) -> None:
    backend = RedisBackend(own_redis.url(), timeout_s=1.0)
    limits = rpm(10)  # nothing reserved: the batch's marker alone keeps it from counting twice
    try:
        admission = await backend.admit(limits, "r", NOON)
        await backend.settle(limits, admission, Charge("a", 42, 5), NOON)
        own_redis.freeze()  # the batch reaches Redis, but its reply does not come back in time
        with pytest.raises(StateError):
            await backend.flush()
        own_redis.thaw()
        await backend.flush()  # the same batch again
        spend = await backend.spend(TENANT, "day", NOON)
        assert spend.upstreams == {"a": {"cost": 42, "tokens": 5, "requests": 1}}
    finally:
        own_redis.thaw()
        await backend.close()


async def test_an_admission_whose_reply_was_lost_is_released(own_redis: RedisServer) -> None:
    backend = RedisBackend(own_redis.url(), timeout_s=1.0)
    limits = Limits(TENANT, requests_per_minute=2, budgets=(("day", 1000),), cost=300)
    try:
        assert (await backend.admit(limits, "first", NOON)).ok
        own_redis.freeze()  # the next admission reaches Redis, but its reply does not come back in time
        with pytest.raises(StateError):
            await backend.admit(limits, "lost", NOON)
        own_redis.thaw()
        assert (await backend.admit(limits, "second", NOON)).ok  # the release of "lost" rides ahead of it
        refused = await backend.admit(limits, "third", NOON)
        assert (refused.ok, refused.limit) == (False, "requests_per_minute")
        assert (await backend.spend(TENANT, "day", NOON)).reserved == 600
    finally:
        own_redis.thaw()
        await backend.close()


@pytest.mark.parametrize("rig", ["redis"], indirect=True)
async def test_what_redis_keeps_for_a_tenant_expires_once_idle(rig: Rig) -> None:
    assert rig.raw is not None
    limits = Limits(TENANT, requests_per_minute=10, tokens_per_minute=1000, tokens=10, budgets=(("day", 10**9),),
                    cost=5)
    for _ in range(3):
        await rig.settle(limits, await rig.admit(limits), Charge("a", 5, 10))
    ttls = {key.decode(): await rig.raw.ttl(key) async for key in rig.raw.scan_iter(match="sy:*")}
    assert set(ttls) >= {f"sy:{{{TENANT}}}:rpm", f"sy:{{{TENANT}}}:tpm", f"sy:{{{TENANT}}}:day:2026-11-25"}
    assert all(ttl > 0 for ttl in ttls.values()), ttls  # -1 would be a key kept forever
    assert ttls[f"sy:{{{TENANT}}}:tpm"] <= 61


@pytest.mark.parametrize("rig", ["redis"], indirect=True)
async def test_the_redis_scripts_hold_counters_within_bounds_whatever_they_are_sent(rig: Rig) -> None:
    """The caller bounds every number; the scripts do too, so a caller that did not cannot break a counter."""
    assert rig.raw is not None
    assert isinstance(rig.backend, RedisBackend)
    keys = rig.backend.keys(TENANT, rig.now)
    huge, sunk = str(10**19), str(-(10**19))
    reply = await rig.raw.eval(ADMIT, 7, *keys, "sy:{acme}:done:r1", -1, -1, 0, MOST, -1, huge, "r1",
                               RESERVATION_TTL_MS, 86400, 86400)
    assert reply[0] == 1
    assert int(await rig.raw.hget(keys[2], "reserved")) == MOST
    for batch, (cost, tokens) in enumerate(((huge, huge), (huge, huge), (sunk, sunk))):
        row = f"{MOST} 10 {cost} {tokens} {sunk} 0 0 2 r1a"
        await rig.raw.eval(SETTLE, 6, *keys[1:], f"sy:{{acme}}:batch:{batch}", EXPIRE_S["day"], EXPIRE_S["month"], row)
    fields = {k.decode(): int(v) for k, v in (await rig.raw.hgetall(keys[2])).items()}
    assert fields == {"reserved": 0, "spent": MOST, "savings": -MOST, "c:a": MOST, "t:a": MOST, "n:a": 1}
    await rig.raw.zadd(keys[3], {f"r2:{huge}": 1})  # a reservation of more than any counter holds, then released
    await rig.raw.eval(SETTLE, 6, *keys[1:], "sy:{acme}:batch:last", EXPIRE_S["day"], EXPIRE_S["month"],
                       f"{huge} 10 0 0 0 0 0 2 r2")
    assert int(await rig.raw.hget(keys[2], "reserved")) == 0


async def test_an_admission_call_is_the_generic_encoding_of_its_arguments() -> None:
    backend = RedisBackend("redis://127.0.0.1:1/0")  # never connects: encoding only
    for limits in (Limits("b%d{x}\u00e9", requests_per_minute=5, tokens=7, budgets=(("month", 99),), cost=12),
                   Limits(TENANT, 100, 1000, 2**60, (("day", 10**16), ("month", 5)), -3)):
        names, held = backend.keys(limits.tenant, NOON), limits.bounded()
        budgets = dict(held.budgets)
        expected = encode(["EVALSHA", sha1(ADMIT), 7, *names, f"sy:{{{limits.tenant}}}:done:r\u00e9%s",
                           -1 if held.requests_per_minute is None else held.requests_per_minute,
                           -1 if held.tokens_per_minute is None else held.tokens_per_minute, held.tokens,
                           budgets.get("day", -1), budgets.get("month", -1), held.cost, "r\u00e9%s", RESERVATION_TTL_MS,
                           EXPIRE_S["day"], EXPIRE_S["month"]])
        assert backend._admission(limits, "r\u00e9%s", NOON) == expected
    await backend.close()


@pytest.mark.parametrize("rig", ["redis"], indirect=True)
async def test_admissions_and_flushes_that_find_the_scripts_forgotten_run_once_after_loading_them(rig: Rig) -> None:
    assert rig.raw is not None
    limits = Limits(TENANT, requests_per_minute=10, budgets=(("day", 1000),), cost=300)
    first = await rig.admit(limits)
    await rig.raw.script_flush()
    second = await rig.admit(limits)  # NOSCRIPT on the fast path: loaded, then run again, once
    assert (first.ok, second.ok) == (True, True)
    assert (await rig.spend()).reserved == 600
    await rig.raw.script_flush()
    await rig.backend.settle(limits, first, Charge("a", 100), rig.now)  # the background flush meets NOSCRIPT too
    for _ in range(1000):
        spend = await rig.spend()
        if spend.spent == 100:
            break
        await asyncio.sleep(0.005)
    assert (spend.spent, spend.reserved) == (100, 300)


@pytest.mark.parametrize("rig", ["redis"], indirect=True)
async def test_a_settlement_whose_id_and_upstream_hold_spaces_and_any_characters_counts_as_sent(rig: Rig) -> None:
    limits = Limits(TENANT, tokens_per_minute=1000, tokens=100, budgets=(("day", 1000),), cost=300)
    admission = await rig.admit(limits, "r 1 \u00e9 2")
    await rig.settle(limits, admission, Charge("up stream \u00e9 9", cost=250, tokens=40, savings=-5))
    spend = await rig.spend()
    assert (spend.spent, spend.reserved, spend.savings) == (250, 0, -5)
    assert spend.upstreams == {"up stream \u00e9 9": {"cost": 250, "tokens": 40, "requests": 1}}
    assert (await rig.admit(tpm(1000, tokens=960))).ok  # the token correction (100 -> 40) was applied
