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
from collections.abc import Coroutine, Iterator
from functools import partial
from typing import Any

from gateway.state.base import MOST, WINDOWS, Admission, Charge, Limits, Spend, StateError, bounded, period
from gateway.state.redis_scripts import (
    ADMIT,
    EXPIRE_S,
    SETTLE,
    SPEND,
    UNDO,
    admit_template,
    decode_admission,
    settlement_row,
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
RETRY_S = 0.2  # the pause before a failed flush is sent again


@contextlib.contextmanager
def redis_errors() -> Iterator[None]:
    """Map redis' exceptions (and timeouts) to StateError: the one boundary where they are met."""
    try:
        yield
    except (ConnectionFailed, ReplyError, OSError, TimeoutError) as exc:
        raise StateError(f"redis: {type(exc).__name__}") from exc


Call = tuple[bytes, int]  # an EVALSHA in RESP, and how many settlements it carries
Asked = tuple[bytes, Limits, str, float, "asyncio.Future[Any]"]  # an admission: its call, limits, id, time, reply
TEMPLATES = 1024  # admission templates kept (one per tenant and limits): more are made again as needed


class RedisBackend:
    """The shared backend. Calls are bounded by timeout_s; concurrent admissions share one pipelined round trip,
    and settlements are flushed in batches.

    Admissions and flushes are written straight to the open connection and answered in its reply callback, with
    no task or timer of their own; connecting, loading the scripts and running them again after Redis forgot them
    are left to a task.
    """

    name = "redis"

    def __init__(self, url: str, timeout_s: float = 0.1) -> None:
        self._client = Connection(url, timeout_s)
        self._timeout_s = timeout_s
        self._scripts = {script: sha1(script) for script in (ADMIT, SETTLE, UNDO, SPEND)}
        self._loaded = False
        self._admissions: list[Asked] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._pending: dict[tuple[str, ...], list[str]] = {}  # settlements by tenant and period
        self._queue: list[Call] = []  # settlements sealed into batches, each sent as it is until it lands
        self._waiting = 0  # settlements pending or queued
        self._undos: list[tuple[float, Call]] = []
        self._flusher: asyncio.Handle | None = None
        self._keys: tuple[int, str, str] = (-1, "", "")
        self._names: dict[str, tuple[list[str], tuple[str, ...]]] = {}  # each tenant's, in the current periods
        self._templates: dict[tuple[Any, ...], tuple[bytes, int]] = {}  # ADMIT calls by tenant and limits

    @property
    def timeout_s(self) -> float:
        """How long one Redis call may take before it fails as Redis unavailable."""
        return self._timeout_s

    async def ping(self) -> None:
        """Reach Redis once; StateError if it does not answer in time."""
        with redis_errors():
            async with asyncio.timeout(self._timeout_s * 2):
                await self._client.execute([["PING"]])

    async def admit(self, limits: Limits, reservation: str, now: float) -> Admission:
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[Any] = loop.create_future()
        if not self._admissions:
            loop.call_soon(self._send_admissions)
        self._admissions.append((self._admission(limits, reservation, now), limits, reservation, now, reply))
        return decode_admission(await reply, reservation, limits, now)

    def _admission(self, limits: Limits, reservation: str, now: float) -> bytes:
        """The ADMIT call of one request: its tenant's template filled with its id, tokens and cost."""
        template, marker = self._template(limits, now)
        tokens, cost = limits.tokens, limits.cost
        token_text = b"%d" % (tokens if 0 <= tokens <= MOST else bounded(tokens))
        cost_text = b"%d" % (cost if 0 <= cost <= MOST else bounded(cost))
        rid = reservation.encode()
        return template % (marker + len(rid), rid, len(token_text), token_text, len(cost_text), cost_text, len(rid),
                           rid)

    def _template(self, limits: Limits, now: float) -> tuple[bytes, int]:
        """The ADMIT call of limits with %-slots for what changes from request to request, and the length of
        the undo marker's name before the id."""
        names = self.keys(limits.tenant, now)
        shape = (limits.tenant, limits.requests_per_minute, limits.tokens_per_minute, limits.budgets)
        found = self._templates.get(shape)
        if found is None:
            if len(self._templates) >= TEMPLATES:
                self._templates.clear()
            found = self._templates[shape] = admit_template(self._scripts[ADMIT], names, limits.bounded())
        return found

    def _send_admissions(self) -> None:
        """Send every admission asked for during this turn of the event loop in one pipeline, with queued releases
        and settlements ahead of them in the same round trip."""
        batch, self._admissions = self._admissions, []
        undos, self._undos = self._undos, []
        settlements = self._take()
        calls = [*(call for _, call in undos), *settlements, *((asked[0], 0) for asked in batch)]
        deadline = asyncio.get_running_loop().time() + self._timeout_s * 2
        done = partial(self._admitted, batch, undos, settlements, calls, deadline)
        if not (self._loaded and self._client.submit(b"".join([call for call, _ in calls]), len(calls), done)):
            self._spawn(self._admit_slowly(batch, undos, settlements, calls, deadline, None))

    def _admitted(self, batch: list[Asked], undos: list[tuple[float, Call]], settlements: list[Call],
                  calls: list[Call], deadline: float, replies: list[Any] | Exception) -> None:
        """Hand each admission its reply; a batch that failed, or that Redis must run again, goes the slow way."""
        if isinstance(replies, Exception):
            self._not_admitted(batch, undos, settlements, StateError(f"redis: {type(replies).__name__}"))
        elif clean(replies):
            self._landed(settlements)
            self._answer(batch, replies)
        else:
            self._spawn(self._admit_slowly(batch, undos, settlements, calls, deadline, replies))

    async def _admit_slowly(self, batch: list[Asked], undos: list[tuple[float, Call]], settlements: list[Call],
                            calls: list[Call], deadline: float, replies: list[Any] | None) -> None:
        """Send the admissions (connecting and loading the scripts first, or running again those Redis had
        forgotten), within the bound of the whole batch."""
        try:
            async with asyncio.timeout_at(deadline):
                replies = await self._run(calls, replies)
        except (StateError, TimeoutError) as exc:
            self._not_admitted(batch, undos, settlements,
                               exc if isinstance(exc, StateError) else StateError("redis: timed out"))
            return
        self._landed(settlements)
        self._answer(batch, replies)

    def _answer(self, batch: list[Asked], replies: list[Any]) -> None:
        """Give each admission of a batch its reply (the last of the batch's replies)."""
        for asked, value in zip(batch, replies[len(replies) - len(batch):], strict=True):
            if not asked[4].done():
                asked[4].set_result(value)

    def _not_admitted(self, batch: list[Asked], undos: list[tuple[float, Call]], settlements: list[Call],
                      error: StateError) -> None:
        """A batch without its replies: queue its releases and settlements again, release its admissions."""
        self._undos[:0] = undos
        self._queue[:0] = settlements
        for _, limits, reservation, now, reply in batch:
            self._undo(limits, reservation, now)
            if not reply.done():
                reply.set_exception(error)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _undo(self, limits: Limits, reservation: str, now: float) -> None:
        """Queue the release of an admission whose reply was lost: Redis may have run it, or may run it yet.

    The release leaves a marker the admission script checks, so whichever runs first, nothing stays reserved.
    It rides ahead of the next admissions on their connection, so it is applied before they are counted.
    """
        names, budgets = self.keys(limits.tenant, now), dict(limits.budgets)
        windows = "".join("1" if window in budgets else "0" for window in WINDOWS)
        keys_ = [names[0], *names[2:], f"sy:{{{limits.tenant}}}:done:{reservation}"]
        self._undos.append((time.monotonic(), (self._call(UNDO, keys_, [reservation, bounded(limits.cost), windows]),
                                               0)))
        self._start_flusher()

    def _call(self, script: str, keys_: list[str], args: list[str | int]) -> bytes:
        """The EVALSHA of script on keys_ and args, in RESP."""
        return encode(["EVALSHA", self._scripts[script], len(keys_), *keys_, *args])

    async def _run(self, calls: list[Call], replies: list[Any] | None = None) -> list[Any]:
        """Run the calls in one pipeline (or take the replies they had); calls whose script Redis had forgotten
        are run again after loading it (only those: the others already ran)."""
        try:
            if replies is None:
                if not self._loaded:
                    await self._load_scripts()
                replies = await self._client.send(b"".join([call for call, _ in calls]), len(calls))
            missing = [i for i, reply in enumerate(replies) if isinstance(reply, ReplyError)
                       and str(reply).startswith("NOSCRIPT")]
            if missing:
                await self._load_scripts()
                again = await self._client.send(b"".join([calls[i][0] for i in missing]), len(missing))
                for i, reply in zip(missing, again, strict=True):
                    replies[i] = reply
        except (ConnectionFailed, ReplyError, OSError) as exc:
            raise StateError(f"redis: {type(exc).__name__}") from exc
        for reply in replies:
            if isinstance(reply, Exception):
                raise StateError(f"redis: {reply}")
        return replies

    async def _load_scripts(self) -> None:
        """Load every script at once, so that a pipeline never finds one script known and another not."""
        await self._client.execute([["SCRIPT", "LOAD", script] for script in self._scripts])
        self._loaded = True

    async def settle(self, limits: Limits, admission: Admission, charge: Charge, now: float) -> None:
        if self._waiting >= MAX_QUEUE:  # Redis away for long: keep memory bounded, say so loudly
            logger.error("dropped a settlement: %d are waiting for Redis already", MAX_QUEUE)
            return
        limits, charge = limits.bounded(), charge.bounded()
        delta = charge.tokens - limits.tokens if limits.tokens_per_minute is not None and admission.ok else 0
        remaining = admission.remaining if admission.ok and admission.reservation else {}
        windows = ("1" if "day" in remaining else "0") + ("1" if "month" in remaining else "0")
        self._pending.setdefault(self._tenant(limits.tenant, now)[1], []).append(settlement_row(
            admission.reservation, limits.cost, windows, charge.upstream, charge.cost, charge.tokens, charge.savings,
            delta, admission.bucket))
        self._waiting += 1
        if self._waiting >= BATCH:
            self._flush_now()
        else:
            self._start_flusher()

    def _start_flusher(self) -> None:
        """Flush within FLUSH_S (unless a flush is due already)."""
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().call_later(FLUSH_S, self._flush_soon)

    def _flush_now(self) -> None:
        """Flush at the next turn of the event loop."""
        if self._flusher is not None:
            self._flusher.cancel()
        self._flusher = asyncio.get_running_loop().call_soon(self._flush_soon)

    def _flush_soon(self) -> None:
        """Send the next queued settlements (and releases that waited long enough for an admission to carry them)."""
        self._flusher = None
        stale = self._stale_undos()
        if stale:
            self._queue[:0] = stale
        if not (self._queue or self._pending):
            if self._undos:
                self._start_flusher()
            return
        batch = self._take()
        done = partial(self._flushed, batch)
        if not (self._loaded and self._client.submit(b"".join([call for call, _ in batch]), len(batch), done)):
            self._spawn(self._flush_slowly(batch, None))

    def _flushed(self, batch: list[Call], replies: list[Any] | Exception) -> None:
        """A flush's replies: what landed no longer counts; what failed is sent again after a pause."""
        if isinstance(replies, Exception):
            self._flush_failed(batch)
        elif clean(replies):
            self._flush_landed(batch)
        else:
            self._spawn(self._flush_slowly(batch, replies))

    async def _flush_slowly(self, batch: list[Call], replies: list[Any] | None) -> None:
        """Send a flush's batch (connecting and loading the scripts first, or running again what Redis forgot)."""
        try:
            async with asyncio.timeout(max(1.0, self._timeout_s * 10)):
                await self._run(batch, replies)
        except (StateError, TimeoutError):
            self._flush_failed(batch)
            return
        self._flush_landed(batch)

    def _flush_landed(self, batch: list[Call]) -> None:
        self._landed(batch)
        if self._queue or self._pending:
            self._flush_now()
        elif self._undos:
            self._start_flusher()

    def _flush_failed(self, batch: list[Call]) -> None:
        self._queue[:0] = batch
        if self._flusher is not None:
            self._flusher.cancel()
        self._flusher = asyncio.get_running_loop().call_later(RETRY_S, self._flush_soon)

    def _take(self) -> list[Call]:
        """Seal pending settlements into batches, one per tenant and period with a marker of its own, and take the
        next few batches off the queue (they are put back as they are if sending fails)."""
        for (base, *names), rows in self._pending.items():
            for start in range(0, len(rows), BATCH):
                chunk = rows[start:start + BATCH]
                args: list[str | int] = [EXPIRE_S["day"], EXPIRE_S["month"], *chunk]
                self._queue.append((self._call(SETTLE, [*names, f"{base}:batch:{os.urandom(8).hex()}"], args),
                                    len(chunk)))
        self._pending.clear()
        taken = self._queue[:CALLS_PER_TRIP]
        del self._queue[:len(taken)]
        return taken

    def _landed(self, calls: list[Call]) -> None:
        """Settlement batches Redis has applied: they no longer count against the queue's bound."""
        for _, settlements in calls:
            self._waiting -= settlements

    def _stale_undos(self) -> list[Call]:
        """Releases no admission has carried for a while: the flusher sends them instead."""
        cutoff = time.monotonic() - UNDO_GRACE_S
        stale = [call for at, call in self._undos if at <= cutoff]
        self._undos = [(at, call) for at, call in self._undos if at > cutoff]
        return stale

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
        return self._tenant(tenant, now)[0]

    def _tenant(self, tenant: str, now: float) -> tuple[list[str], tuple[str, ...]]:
        """The keys of one tenant, and its settlements' group: its keys' prefix and the keys SETTLE takes."""
        second, day, month = self._keys
        if int(now) != second:
            second, day, month = int(now), period("day", now), period("month", now)
            if (day, month) != self._keys[1:]:
                self._names.clear()
                self._templates.clear()
            self._keys = (second, day, month)
        found = self._names.get(tenant)
        if found is None:
            if len(self._names) >= TEMPLATES:
                self._names.clear()
            base = f"sy:{{{tenant}}}"
            names = [f"{base}:rpm", f"{base}:tpm", f"{base}:day:{day}", f"{base}:day:{day}:res",
                     f"{base}:month:{month}", f"{base}:month:{month}:res"]
            found = self._names[tenant] = (names, (base, *names[1:]))
        return found

    async def spend(self, tenant: str, window: str, now: float) -> Spend:
        names = self.keys(tenant, now)
        hash_key = names[2 if window == "day" else 4]
        try:
            async with asyncio.timeout(self._timeout_s * 2):
                pairs = (await self._run([(self._call(SPEND, [hash_key, f"{hash_key}:res"], []), 0)]))[0]
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
        if self._flusher is not None:
            self._flusher.cancel()
            self._flusher = None
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._client.aclose()


def clean(replies: list[Any]) -> bool:
    """Whether no reply of a batch is an error."""
    for reply in replies:  # noqa: SIM110  # all() over a generator costs twice this loop
        if isinstance(reply, Exception):
            return False
    return True
