"""Limits and spend shared by every replica through Redis, over one pipelined connection (gateway/state/resp.py).

Admission is one Lua script: it checks the sliding-minute rate limits and every budget and, only if
all pass, counts the request and reserves its estimated cost, atomically. Settlements are batched into
one pipelined round trip every few milliseconds, off the request's path, and are idempotent, so a
batch retried after a lost reply is never counted twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Iterator
from typing import Any

from gateway.state.base import (
    RESERVATION_TTL_MS,
    WINDOWS,
    Admission,
    Charge,
    Limits,
    Rate,
    Spend,
    StateError,
    period,
    resets_at,
)
from gateway.state.resp import Connection, ConnectionFailed, ReplyError, encode

PRELUDE = """
local MOST = 9007199254740991  -- 2^53 - 1: every amount and count stays within [0, MOST], exact as a Lua number
local function bounded(n, least)
  if n ~= n then return 0 end  -- NaN
  return math.max(least or 0, math.min(MOST, n))
end
local function int(n) return string.format('%d', n) end
-- Add delta (within [-MOST, MOST]) to a hash field held within [least, MOST], keeping it there: the sum stays far
-- inside Redis' 64 bits, and is then put back within bounds. Returns the value the field had before.
local function add(hash, field, delta, least)
  delta = bounded(delta, -MOST)
  local value = redis.call('HINCRBY', hash, field, int(delta))
  local held = bounded(value, least)
  if held ~= value then redis.call('HSET', hash, field, int(held)) end
  return value - delta
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- Release reservations whose holder never settled them (a crashed replica). A released one leaves a tombstone,
-- so that if its holder settles after all, the spend is still counted, once. Returns the amount released.
local function purge(hash, res, now)
  local expired = redis.call('ZRANGEBYSCORE', res, '-inf', now)
  if #expired == 0 then return 0 end
  redis.call('ZREMRANGEBYSCORE', res, '-inf', now)
  local amount = 0
  for _, member in ipairs(expired) do
    if string.sub(member, 1, 2) ~= 'x:' then
      amount = amount + tonumber(string.match(member, ':(%d+)$'))
      redis.call('ZADD', res, now + 86400000, 'x:' .. member)
    end
  end
  if amount > 0 then add(hash, 'reserved', -amount) end
  return amount
end
"""

# KEYS: rpm, tpm, day hash, day reservations, month hash, month reservations, undo marker.
# ARGV: rpm, tpm, tokens, day limit, month limit, cost, id, reservation ttl ms, day expiry s, month expiry s
# (-1: no such limit; the caller holds every number within [0, MOST], and so does this script). A reservation
# is the member 'id:cost' of its window's sorted set, scored by its expiry. The reply: ok, the limit that refused,
# ms to wait, nano-dollars left of the day and month budgets, the token bucket's second, then requests left and
# ms until all are back, tokens left and ms until all are back (-1: no such limit).
ADMIT = PRELUDE + """
if redis.call('EXISTS', KEYS[7]) == 1 then return {0, 'cancelled', 0} end
local now = now_ms()
local rpm, tpm = tonumber(ARGV[1]), tonumber(ARGV[2])
local tokens, cost, id = bounded(tonumber(ARGV[3])), bounded(tonumber(ARGV[6])), ARGV[7]
local second = math.floor(now / 1000)
local count, used, flat = 0, 0, {}  -- requests and tokens in the minute, and the minute's token buckets
-- The reply, with what is left of each rate limit and when all of it is again; extra is 1 once this request is
-- counted (then the newest request and tokens are its own: the search for them is left to refusals).
local function answer(ok, limit, wait, day, month, extra)
  local rate = {-1, 0, -1, 0}
  if rpm >= 0 then
    local newest = extra > 0 and now or nil
    if newest == nil and count > 0 then newest = tonumber(redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')[2]) end
    rate[1], rate[2] = math.max(0, rpm - count - extra), newest and math.max(0, newest + 60000 - now) or 0
  end
  if tpm >= 0 then
    local top = extra > 0 and second or nil
    for i = 1, extra > 0 and 0 or #flat, 2 do
      local b = tonumber(flat[i])
      if b > second - 60 and tonumber(flat[i + 1]) > 0 and (top == nil or b > top) then top = b end
    end
    rate[3], rate[4] = math.max(0, tpm - used - extra * tokens), top and math.max(0, (top + 60) * 1000 - now) or 0
  end
  return {ok, limit, wait, day or '', month or '', second, rate[1], rate[2], rate[3], rate[4]}
end
if rpm >= 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 60000)
  count = redis.call('ZCARD', KEYS[1])
end
if tpm >= 0 then  -- read before any refusal, so that every answer tells what is left of both limits
  flat = redis.call('HGETALL', KEYS[2])
  for i = 1, #flat, 2 do
    if tonumber(flat[i]) <= second - 60 then redis.call('HDEL', KEYS[2], flat[i])
    else used = used + tonumber(flat[i + 1]) end
  end
end
if rpm >= 0 and count >= rpm then
  local oldest = redis.call('ZRANGE', KEYS[1], count - rpm, count - rpm, 'WITHSCORES')
  return answer(0, 'requests_per_minute', tonumber(oldest[2]) + 60000 - now, nil, nil, 0)
end
if tpm >= 0 then
  if used + tokens > tpm then  -- refused: work out when enough of the minute's tokens will have left it
    if tokens > tpm then return answer(0, 'tokens_per_minute', 60000, nil, nil, 0) end
    local counted, freed = {}, 0
    for i = 1, #flat, 2 do counted[tonumber(flat[i])] = tonumber(flat[i + 1]) end
    for b = second - 59, second do
      freed = freed + (counted[b] or 0)
      if used - freed + tokens <= tpm then
        return answer(0, 'tokens_per_minute', (b + 60 - second) * 1000, nil, nil, 0)
      end
    end
    return answer(0, 'tokens_per_minute', 60000, nil, nil, 0)
  end
end
local windows, left = {'day', 'month'}, {}
for w = 1, 2 do
  local limit = tonumber(ARGV[3 + w])
  if limit >= 0 then
    local hash = KEYS[1 + 2 * w]
    local found = redis.call('HMGET', hash, 'spent', 'reserved')
    local spent, reserved = tonumber(found[1] or '0'), tonumber(found[2] or '0')
    if spent + reserved + cost > limit then  -- only then can expired reservations make a difference
      reserved = reserved - purge(hash, KEYS[2 + 2 * w], now)
      if spent + reserved + cost > limit then
        local others = int(math.max(0, limit - spent - reserved))
        return answer(0, windows[w], -1, w == 1 and others or nil, w == 2 and others or nil, 0)
      end
    end
    left[w] = limit - spent - reserved - cost
  end
end
if rpm >= 0 then
  redis.call('ZADD', KEYS[1], now, id)
  redis.call('PEXPIRE', KEYS[1], 61000)
end
if tpm >= 0 then
  if redis.call('HINCRBY', KEYS[2], second, int(tokens)) == tokens then  -- this second's first: keep the minute
    redis.call('EXPIRE', KEYS[2], 61)
  end
end
local remaining = {nil, nil}
for w = 1, 2 do
  if left[w] then  -- spent + reserved + cost stays within the limit, and so within MOST: HINCRBY cannot overflow
    local hash, res = KEYS[1 + 2 * w], KEYS[2 + 2 * w]
    redis.call('ZADD', res, now + tonumber(ARGV[8]), id .. ':' .. int(cost))
    if redis.call('HINCRBY', hash, 'reserved', int(cost)) == cost then  -- nothing else reserved: maybe a new period
      redis.call('EXPIRE', hash, ARGV[8 + w])
      redis.call('EXPIRE', res, ARGV[8 + w])
    end
    remaining[w] = int(left[w])
  end
end
return answer(1, '', 0, remaining[1], remaining[2], 1)
"""

# Settlements of one tenant and period, in one batch. KEYS: tpm, day hash, day reservations, month hash, month
# reservations, the batch's marker. ARGV: day expiry s, month expiry s, then nine per settlement: id, reserved cost,
# which windows reserved it ('10': day only, '01', '11', '00'), upstream ('' when nothing was served), cost, tokens,
# savings, token correction, token bucket. The marker makes a batch resent after a lost reply count once; removing
# its reservation is what lets a settlement count, so one sent twice in different batches counts once too.
# Every counter is added to within its bounds (add), so no report of an upstream can overflow or sink one.
SETTLE = PRELUDE + """
if redis.call('SET', KEYS[6], '1', 'NX', 'EX', 600) == false then return 0 end
local released, spent, saved, rows, corrections = {0, 0}, 0, 0, {}, {}
for i = 3, #ARGV, 9 do
  local member, counts = ARGV[i] .. ':' .. ARGV[i + 1], ARGV[i + 2] == '00'
  for w = 1, 2 do
    if string.sub(ARGV[i + 2], w, w) == '1' then
      if redis.call('ZREM', KEYS[1 + 2 * w], member) == 1 then
        released[w] = bounded(released[w] + bounded(tonumber(ARGV[i + 1])))
        counts = true
      elseif redis.call('ZREM', KEYS[1 + 2 * w], 'x:' .. member) == 1 then
        counts = true  -- purged while its holder was presumed gone: only its tombstone was left
      end
    end
  end
  local upstream = ARGV[i + 3]
  if counts and upstream ~= '' then  -- not counts: settled already
    local row = rows[upstream] or {0, 0, 0}
    local cost, tokens = bounded(tonumber(ARGV[i + 4])), bounded(tonumber(ARGV[i + 5]))
    rows[upstream] = row
    row[1], row[2], row[3] = bounded(row[1] + cost), bounded(row[2] + tokens), row[3] + 1
    spent, saved = bounded(spent + cost), bounded(saved + tonumber(ARGV[i + 6]), -MOST)
  end
  if counts and ARGV[i + 7] ~= '0' then
    local bucket = ARGV[i + 8]
    corrections[bucket] = bounded((corrections[bucket] or 0) + tonumber(ARGV[i + 7]), -MOST)
  end
end
for w = 1, 2 do
  local hash = KEYS[2 * w]
  if released[w] > 0 then add(hash, 'reserved', -released[w]) end
  if next(rows) then
    if add(hash, 'spent', spent) == 0 then redis.call('EXPIRE', hash, ARGV[w]) end
    if saved ~= 0 then add(hash, 'savings', saved, -MOST) end
    for upstream, row in pairs(rows) do
      add(hash, 'c:' .. upstream, row[1])
      add(hash, 't:' .. upstream, row[2])
      add(hash, 'n:' .. upstream, row[3])
    end
  end
end
for bucket, delta in pairs(corrections) do
  if delta ~= 0 then
    local value = redis.call('HINCRBY', KEYS[1], bucket, int(delta))
    if value == delta then redis.call('HDEL', KEYS[1], bucket)  -- its second had left the minute already
    elseif value < 0 then redis.call('HSET', KEYS[1], bucket, '0') end
  end
end
return 1
"""

# The release of an admission whose reply was lost. KEYS: rpm, day hash, day reservations, month hash, month
# reservations, the admission's undo marker. ARGV: id, reserved cost, which windows reserved it.
UNDO = PRELUDE + """
redis.call('SET', KEYS[6], '1', 'EX', 600)
redis.call('ZREM', KEYS[1], ARGV[1])
local member = ARGV[1] .. ':' .. ARGV[2]
for w = 1, 2 do
  if string.sub(ARGV[3], w, w) == '1' and redis.call('ZREM', KEYS[1 + 2 * w], member) == 1 then
    add(KEYS[2 * w], 'reserved', -tonumber(ARGV[2]))
  end
end
return 1
"""

SPEND = PRELUDE + """
purge(KEYS[1], KEYS[2], now_ms())
return redis.call('HGETALL', KEYS[1])
"""

EXPIRE_S = {"day": 3 * 86400, "month": 40 * 86400}
logger = logging.getLogger("switchyard.state")
FLUSH_S = 0.01
UNDO_GRACE_S = 1.0
BATCH = 256  # settlements in one batch
SETTLEMENT_FIELDS = 9  # ARGV per settlement in SETTLE
CALLS_PER_TRIP = 64  # batches in one round trip
MAX_QUEUE = 100_000


@contextlib.contextmanager
def redis_errors() -> Iterator[None]:
    """Map redis' exceptions (and timeouts) to StateError: the one boundary where they are met."""
    try:
        yield
    except (ConnectionFailed, ReplyError, OSError, TimeoutError) as exc:
        raise StateError(f"redis: {type(exc).__name__}") from exc


Call = tuple[str, list[str], list[str | int]]  # (script, keys, args)


def sha1(script: str) -> str:
    """The SHA1 Redis knows a script by."""
    return hashlib.sha1(script.encode()).hexdigest()


class RedisBackend:
    """The shared backend. Calls are bounded by timeout_s; concurrent admissions share one pipelined round trip,
    and settlements are flushed in batches."""

    name = "redis"

    def __init__(self, url: str, timeout_s: float = 0.1) -> None:
        self._client = Connection(url, timeout_s)
        self._timeout_s = timeout_s
        self._scripts = {script: sha1(script) for script in (ADMIT, SETTLE, UNDO, SPEND)}
        self._loaded = False
        self._admissions: list[tuple[list[str], list[str | int], asyncio.Future[Any]]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._pending: dict[tuple[str, ...], list[list[str | int]]] = {}  # settlements by tenant and period
        self._queue: list[Call] = []  # settlements sealed into batches, each sent as it is until it lands
        self._waiting = 0  # settlements pending or queued
        self._undos: list[tuple[float, Call]] = []
        self._wake = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._keys: tuple[int, str, str] = (-1, "", "")

    async def ping(self) -> None:
        """Reach Redis once; StateError if it does not answer in time."""
        with redis_errors():
            async with asyncio.timeout(self._timeout_s * 2):
                await self._client.execute([["PING"]])

    async def admit(self, limits: Limits, reservation: str, now: float) -> Admission:
        limits = limits.bounded()
        budgets = dict(limits.budgets)
        args: list[str | int] = [
            _or_minus(limits.requests_per_minute), _or_minus(limits.tokens_per_minute), limits.tokens,
            budgets.get("day", -1), budgets.get("month", -1), limits.cost, reservation, RESERVATION_TTL_MS,
            EXPIRE_S["day"], EXPIRE_S["month"]]
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[Any] = loop.create_future()
        if not self._admissions:
            loop.call_soon(self._send_admissions)
        names = self.keys(limits.tenant, now)
        self._admissions.append(([*names, f"sy:{{{limits.tenant}}}:done:{reservation}"], args, reply))
        return _admission(await reply, reservation, limits, now)

    def _send_admissions(self) -> None:
        """Send every admission asked for during this turn of the event loop in one pipeline."""
        batch, self._admissions = self._admissions, []
        task = asyncio.get_running_loop().create_task(self._admit_batch(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _admit_batch(self, batch: list[tuple[list[str], list[str | int], asyncio.Future[Any]]]) -> None:
        """Send the admissions, with queued releases and settlements ahead of them in the same round trip."""
        undos, self._undos = self._undos, []
        settlements = self._take()
        try:
            async with asyncio.timeout(self._timeout_s * 2):
                replies = await self._run([*(c for _, c in undos), *settlements,
                                           *((ADMIT, k, a) for k, a, _ in batch)])
        except (StateError, TimeoutError) as exc:
            self._undos[:0] = undos
            self._queue[:0] = settlements
            error = exc if isinstance(exc, StateError) else StateError("redis: timed out")
            for keys_, args, reply in batch:
                self._undo(keys_, args)
                if not reply.done():
                    reply.set_exception(error)
            return
        self._landed(settlements)
        for (_, _, reply), value in zip(batch, replies[len(undos) + len(settlements):], strict=True):
            if not reply.done():
                reply.set_result(value)

    def _undo(self, keys_: list[str], args: list[str | int]) -> None:
        """Queue the release of an admission whose reply was lost: Redis may have run it, or may run it yet.

    The release leaves a marker the admission script checks, so whichever runs first, nothing stays reserved.
    It rides ahead of the next admissions on their connection, so it is applied before they are counted.
    """
        reservation, cost = args[6], args[5]
        windows = "".join("0" if int(limit) < 0 else "1" for limit in args[3:5])
        self._undos.append((time.monotonic(), (UNDO, [keys_[0], *keys_[2:]], [reservation, cost, windows])))
        self._start_flusher()

    async def _run(self, calls: list[Call]) -> list[Any]:
        """EVALSHA each call's script in one pipeline; calls whose script Redis had forgotten are run again after
        loading it (only those: the others already ran)."""
        with redis_errors():
            if not self._loaded:
                await self._load_scripts()
            replies = await self._pipeline(calls)
            missing = [i for i, reply in enumerate(replies) if isinstance(reply, ReplyError)
                       and str(reply).startswith("NOSCRIPT")]
            if missing:
                await self._load_scripts()
                for i, reply in zip(missing, await self._pipeline([calls[i] for i in missing]), strict=True):
                    replies[i] = reply
        for reply in replies:
            if isinstance(reply, Exception):
                raise StateError(f"redis: {reply}")
        return replies

    async def _load_scripts(self) -> None:
        """Load every script at once, so that a pipeline never finds one script known and another not."""
        await self._client.execute([["SCRIPT", "LOAD", script] for script in self._scripts])
        self._loaded = True

    async def _pipeline(self, calls: list[Call]) -> list[Any]:
        return await self._client.send(b"".join(encode(["EVALSHA", self._scripts[script], len(keys_), *keys_, *args])
                                                for script, keys_, args in calls), len(calls))

    async def settle(self, limits: Limits, admission: Admission, charge: Charge, now: float) -> None:
        if self._waiting >= MAX_QUEUE:  # Redis away for long: keep memory bounded, say so loudly
            logger.error("dropped a settlement: %d are waiting for Redis already", MAX_QUEUE)
            return
        limits, charge = limits.bounded(), charge.bounded()
        names = self.keys(limits.tenant, now)
        delta = charge.tokens - limits.tokens if limits.tokens_per_minute is not None and admission.ok else 0
        reserved = admission.ok and bool(admission.reservation)
        windows = "".join("1" if reserved and window in admission.remaining else "0" for window in WINDOWS)
        group = (f"sy:{{{limits.tenant}}}", *names[1:])
        self._pending.setdefault(group, []).append([admission.reservation, limits.cost, windows, charge.upstream,
                                                    charge.cost, charge.tokens, charge.savings, delta,
                                                    admission.bucket])
        self._waiting += 1
        self._start_flusher()
        if self._waiting >= BATCH:
            self._wake.set()

    def _start_flusher(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())

    def _take(self) -> list[Call]:
        """Seal pending settlements into batches, one per tenant and period with a marker of its own, and take the
        next few batches off the queue (they are put back as they are if sending fails)."""
        for (base, *names), rows in self._pending.items():
            for start in range(0, len(rows), BATCH):
                args: list[str | int] = [EXPIRE_S["day"], EXPIRE_S["month"]]
                for row in rows[start:start + BATCH]:
                    args.extend(row)
                self._queue.append((SETTLE, [*names, f"{base}:batch:{os.urandom(8).hex()}"], args))
        self._pending.clear()
        taken = self._queue[:CALLS_PER_TRIP]
        del self._queue[:len(taken)]
        return taken

    def _landed(self, calls: list[Call]) -> None:
        """Settlement batches Redis has applied: they no longer count against the queue's bound."""
        self._waiting -= sum((len(args) - 2) // SETTLEMENT_FIELDS for script, _, args in calls if script == SETTLE)

    def _stale_undos(self) -> list[Call]:
        """Releases no admission has carried for a while: the flusher sends them instead."""
        cutoff = time.monotonic() - UNDO_GRACE_S
        stale = [call for at, call in self._undos if at <= cutoff]
        self._undos = [(at, call) for at, call in self._undos if at > cutoff]
        return stale

    async def _flush_loop(self) -> None:
        """Send queued settlements until none are left; a failed batch stays queued and is sent again."""
        while self._queue or self._pending or self._undos:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), FLUSH_S)
            self._wake.clear()
            try:
                await self.flush()
            except StateError:
                await asyncio.sleep(0.2)

    async def flush(self) -> None:
        """Send every queued settlement now (and releases that waited long enough for an admission to carry them)."""
        stale = self._stale_undos()
        if stale:
            self._queue[:0] = stale
        while self._queue or self._pending:
            batch = self._take()
            try:
                async with asyncio.timeout(max(1.0, self._timeout_s * 10)):
                    await self._run(batch)
            except (StateError, TimeoutError) as exc:
                self._queue[:0] = batch
                raise exc if isinstance(exc, StateError) else StateError("redis: timed out") from None
            self._landed(batch)

    def keys(self, tenant: str, now: float) -> list[str]:
        """The keys of one tenant, all in one hash slot; the period names are worked out once a second."""
        second, day, month = self._keys
        if int(now) != second:
            second, day, month = int(now), period("day", now), period("month", now)
            self._keys = (second, day, month)
        base = f"sy:{{{tenant}}}"
        return [f"{base}:rpm", f"{base}:tpm", f"{base}:day:{day}", f"{base}:day:{day}:res", f"{base}:month:{month}",
                f"{base}:month:{month}:res"]

    async def spend(self, tenant: str, window: str, now: float) -> Spend:
        names = self.keys(tenant, now)
        hash_key = names[2 if window == "day" else 4]
        try:
            async with asyncio.timeout(self._timeout_s * 2):
                pairs = (await self._run([(SPEND, [hash_key, f"{hash_key}:res"], [])]))[0]
        except TimeoutError:
            raise StateError("redis: timed out") from None
        flat = dict(zip(pairs[::2], pairs[1::2], strict=True)) if isinstance(pairs, list) else dict(pairs)
        fields = {_text(k): int(v) for k, v in flat.items()}
        found = Spend(tenant, window, period(window, now), fields.get("spent", 0), fields.get("reserved", 0),
                      fields.get("savings", 0))
        for name, value in fields.items():
            kind, _, upstream = name.partition(":")
            if kind in ("c", "t", "n") and upstream:
                row = found.upstreams.setdefault(upstream, {"cost": 0, "tokens": 0, "requests": 0})
                row[{"c": "cost", "t": "tokens", "n": "requests"}[kind]] = value
        return found

    async def put(self, key: str, value: str, ttl_s: int) -> None:
        """Set key to value for ttl_s seconds (a Responses API follow-up's upstream, for every replica)."""
        await self._command(["SET", key, value, "EX", ttl_s])

    async def get(self, key: str) -> str | None:
        """The value of key, or None."""
        value = await self._command(["GET", key])
        return None if value is None else _text(value)

    async def _command(self, command: list[str | int]) -> Any:
        """One command's reply, within the call timeout; StateError when it fails."""
        with redis_errors():
            async with asyncio.timeout(self._timeout_s * 2):
                reply = (await self._client.execute([command]))[0]
        if isinstance(reply, Exception):
            raise StateError(f"redis: {reply}")
        return reply

    async def close(self) -> None:
        if self._queue or self._pending:
            with contextlib.suppress(StateError):
                await self.flush()
        tasks = [*self._tasks, *([self._flusher] if self._flusher is not None else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._client.aclose()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _or_minus(value: int | None) -> int:
    return -1 if value is None else value


def _admission(reply: list[Any], reservation: str, limits: Limits, now: float) -> Admission:
    rates = _rates(reply) if len(reply) > 6 else {}
    if int(reply[0]):
        remaining = {}
        if reply[3]:
            remaining["day"] = int(reply[3])
        if reply[4]:
            remaining["month"] = int(reply[4])
        return Admission(True, reservation, remaining=remaining, bucket=int(reply[5]), rates=rates)
    limit = _text(reply[1])
    if limit not in WINDOWS:
        return Admission(False, limit=limit, retry_after_s=float(reply[2]) / 1000, rates=rates)
    left = reply[3] if limit == "day" else reply[4]
    return Admission(False, limit=limit, retry_after_s=resets_at(limit, now) - now,
                     remaining={limit: max(0, int(left or 0))}, rates=rates)


def _rates(reply: list[Any]) -> dict[str, Rate]:
    """Requests and tokens left and ms until all are back, as ADMIT returns them (-1 left: no such limit)."""
    rates = {}
    if int(reply[6]) >= 0:
        rates["requests"] = Rate(int(reply[6]), int(reply[7]) / 1000)
    if int(reply[8]) >= 0:
        rates["tokens"] = Rate(int(reply[8]), int(reply[9]) / 1000)
    return rates
