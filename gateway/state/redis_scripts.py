"""The Lua scripts the Redis backend runs, the layout of their keys and arguments, and the decoding of their replies.

Every number a script handles stays within [0, 2^53 - 1], exact as a Lua number; every counter is added to within
its bounds, so no report of an upstream can overflow or sink one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from gateway.state.base import RESERVATION_TTL_MS, WINDOWS, Admission, Limits, Rate, resets_at
from gateway.state.resp import Arg, encode

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
# reservations, the batch's marker. ARGV: day expiry s, month expiry s, then one per settlement (settlement_row):
# reserved cost, which windows reserved it ('10': day only, '01', '11', '00'), cost, tokens, savings, token
# correction, token bucket and the id's length in bytes, separated by spaces, then the id and the upstream (''
# when nothing was served) run together. The marker makes a batch resent after a lost reply count once; removing
# its reservation is what lets a settlement count, so one sent twice in different batches counts once too.
# Every counter is added to within its bounds (add), so no report of an upstream can overflow or sink one.
SETTLE = PRELUDE + """
if redis.call('SET', KEYS[6], '1', 'NX', 'EX', 600) == false then return 0 end
local released, spent, saved, rows, corrections = {0, 0}, 0, 0, {}, {}
for i = 3, #ARGV do
  local reserved, windows, cost, tokens, savings, delta, bucket, length, rest =
    string.match(ARGV[i], '^(%S+) (%S+) (%S+) (%S+) (%S+) (%S+) (%S+) (%d+) (.*)$')
  length = tonumber(length)
  local member, counts = string.sub(rest, 1, length) .. ':' .. reserved, windows == '00'
  for w = 1, 2 do
    if string.sub(windows, w, w) == '1' then
      if redis.call('ZREM', KEYS[1 + 2 * w], member) == 1 then
        released[w] = bounded(released[w] + bounded(tonumber(reserved)))
        counts = true
      elseif redis.call('ZREM', KEYS[1 + 2 * w], 'x:' .. member) == 1 then
        counts = true  -- purged while its holder was presumed gone: only its tombstone was left
      end
    end
  end
  local upstream = string.sub(rest, length + 1)
  if counts and upstream ~= '' then  -- not counts: settled already
    local row = rows[upstream] or {0, 0, 0}
    cost, tokens = bounded(tonumber(cost)), bounded(tonumber(tokens))
    rows[upstream] = row
    row[1], row[2], row[3] = bounded(row[1] + cost), bounded(row[2] + tokens), row[3] + 1
    spent, saved = bounded(spent + cost), bounded(saved + tonumber(savings), -MOST)
  end
  if counts and delta ~= '0' then
    corrections[bucket] = bounded((corrections[bucket] or 0) + tonumber(delta), -MOST)
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


def settlement_row(reservation: str, reserved: int, windows: str, upstream: str, cost: int, tokens: int,
                   savings: int, delta: int, bucket: int) -> str:
    """One settlement as SETTLE takes it: a single argument, which costs a tenth of encoding nine."""
    return (f"{reserved} {windows} {cost} {tokens} {savings} {delta} {bucket} {len(reservation.encode())} "
            f"{reservation}{upstream}")


def sha1(script: str) -> str:
    """The SHA1 Redis knows a script by."""
    return hashlib.sha1(script.encode()).hexdigest()


def admit_template(sha: str, names: list[str], limits: Limits) -> tuple[bytes, int]:
    """The EVALSHA of ADMIT for limits (held within bounds) on a tenant's keys, in RESP, as a %-template to fill
    with (len(marker), id, len(tokens), tokens, len(cost), cost, len(id), id); and len(marker) less the id's.

    Only the undo marker, the tokens, the cost and the id change from request to request, so the rest is encoded
    once: the whole call then costs one %-format, a tenth of encoding it argument by argument.
    """
    budgets = dict(limits.budgets)
    marker = f"sy:{{{limits.tenant}}}:done:".encode()
    rates = [-1 if limit is None else limit for limit in (limits.requests_per_minute, limits.tokens_per_minute)]
    template = b"".join([
        b"*20\r\n", fixed(["EVALSHA", sha, 7, *names]), b"$%d\r\n", marker.replace(b"%", b"%%"), b"%b\r\n",
        fixed(rates), b"$%d\r\n%b\r\n", fixed([budgets.get("day", -1), budgets.get("month", -1)]),
        b"$%d\r\n%b\r\n$%d\r\n%b\r\n", fixed([RESERVATION_TTL_MS, EXPIRE_S["day"], EXPIRE_S["month"]])])
    return template, len(marker)


def fixed(args: Sequence[Arg]) -> bytes:
    """Arguments in RESP as they go inside a command (no count before them), with every % doubled."""
    return encode(args).split(b"\r\n", 1)[1].replace(b"%", b"%%")


def text(value: bytes | str) -> str:
    """A reply's bytes as text."""
    return value.decode() if isinstance(value, bytes) else value


def decode_admission(reply: list[Any], reservation: str, limits: Limits, now: float) -> Admission:
    """The Admission an ADMIT reply tells of (its numbers come as integers, its texts as bytes)."""
    rates = decode_rates(reply) if len(reply) > 6 else {}
    if reply[0]:
        day, month = reply[3], reply[4]
        remaining = {"day": int(day), "month": int(month)} if day and month else (
            {"day": int(day)} if day else {"month": int(month)} if month else {})
        return Admission(True, reservation, remaining=remaining, bucket=reply[5], rates=rates)
    limit = text(reply[1])
    if limit not in WINDOWS:
        return Admission(False, limit=limit, retry_after_s=reply[2] / 1000, rates=rates)
    left = reply[3] if limit == "day" else reply[4]
    return Admission(False, limit=limit, retry_after_s=resets_at(limit, now) - now,
                     remaining={limit: max(0, int(left or 0))}, rates=rates)


def decode_rates(reply: list[Any]) -> dict[str, Rate]:
    """Requests and tokens left and ms until all are back, as ADMIT returns them (-1 left: no such limit)."""
    requests, tokens = reply[6], reply[8]
    if requests >= 0:
        if tokens >= 0:
            return {"requests": Rate(requests, reply[7] / 1000), "tokens": Rate(tokens, reply[9] / 1000)}
        return {"requests": Rate(requests, reply[7] / 1000)}
    return {"tokens": Rate(tokens, reply[9] / 1000)} if tokens >= 0 else {}
