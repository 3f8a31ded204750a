"""Limits and spend shared by every replica through Redis, over one pipelined connection (gateway/state/resp.py).

Admission is one Lua script (gateway/state/redis_scripts.py): it checks the sliding-minute rate limits and every
budget and, only if all pass, counts the request and reserves its estimated cost, atomically. Settlements are
batched into one pipelined round trip every few milliseconds, off the request's path, and are idempotent, so a
batch retried after a lost reply is never counted twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Iterator
from typing import Any

from gateway.state.base import RESERVATION_TTL_MS, WINDOWS, Admission, Charge, Limits, Spend, StateError, period
from gateway.state.redis_scripts import (
    ADMIT,
    EXPIRE_S,
    SETTLE,
    SETTLEMENT_FIELDS,
    SPEND,
    UNDO,
    decode_admission,
    sha1,
    text,
)
from gateway.state.resp import Connection, ConnectionFailed, ReplyError, encode

logger = logging.getLogger("switchyard.state")
FLUSH_S = 0.01
UNDO_GRACE_S = 1.0
BATCH = 256  # settlements in one batch
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
        return decode_admission(await reply, reservation, limits, now)

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
        fields = {text(k): int(v) for k, v in flat.items()}
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
        return None if value is None else text(value)

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


def _or_minus(value: int | None) -> int:
    return -1 if value is None else value
