"""The audit trail: one JSON line per request, hash-chained, written off the request path.

Each record carries `prev`, the SHA-256 of the line before it in the same chain (one chain per
process, named by `chain`), and `seq`, so an auditor can show that no line was removed or edited
(`switchyard audit verify FILE...`). Records hold decisions, attempts, tokens and cost: never message
content, never a key.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import socket
import sys
import time
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

import orjson

from gateway.metrics import Metrics

logger = logging.getLogger("switchyard.audit")
GENESIS = "0" * 64
FLUSH_S = 0.2
MAX_QUEUE = 100_000


class Sink(Protocol):
    """Somewhere audit lines go; write may block, so it runs in a worker thread."""

    name: str

    def write(self, lines: list[bytes]) -> None:
        """Append the lines (each ending in a newline)."""

    def close(self) -> None:
        """Flush and release."""


class StdoutSink:
    """Audit lines on standard output, for a log collector."""

    name = "stdout"

    def write(self, lines: list[bytes]) -> None:
        sys.stdout.buffer.write(b"".join(lines))
        sys.stdout.buffer.flush()

    def close(self) -> None:
        sys.stdout.buffer.flush()


class FileSink:
    """Audit lines in a file that rotates at max_bytes, keeping `backups` old files (PATH.1 is the newest)."""

    name = "file"

    def __init__(self, path: str, max_bytes: int = 100 * 1024 * 1024, backups: int = 10) -> None:
        self.path = Path(path.replace("{pid}", str(os.getpid())))
        self.max_bytes = max_bytes
        self.backups = backups
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("ab")

    def write(self, lines: list[bytes]) -> None:
        data = b"".join(lines)
        if self._file.tell() + len(data) > self.max_bytes and self._file.tell() > 0:
            self._rotate()
        self._file.write(data)
        self._file.flush()

    def _rotate(self) -> None:
        self._file.close()
        for index in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{index}")
            if older.exists():
                older.replace(self.path.with_name(f"{self.path.name}.{index + 1}"))
        self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        self._file = self.path.open("ab")

    def close(self) -> None:
        self._file.close()


class AuditLog:
    """Chains records as they come and hands them to the sinks in batches from a background task."""

    def __init__(self, sinks: list[Sink], metrics: Metrics) -> None:
        self.sinks = sinks
        self.metrics = metrics
        self.chain = f"{socket.gethostname()}:{os.getpid()}:{int(time.time())}"
        self._prev = GENESIS
        self._seq = 0
        self._queue: deque[bytes] = deque()
        self._wake = asyncio.Event()

    @property
    def enabled(self) -> bool:
        """Whether any sink is configured."""
        return bool(self.sinks)

    def record(self, fields: dict[str, Any]) -> None:
        """Chain one record and queue it; never blocks, never raises."""
        self._seq += 1
        line = orjson.dumps({**fields, "chain": self.chain, "seq": self._seq, "prev": self._prev}) + b"\n"
        self._prev = hashlib.sha256(line).hexdigest()
        if len(self._queue) >= MAX_QUEUE:
            self.metrics.count(self.metrics.audit_errors, "queue_full")
            return
        self._queue.append(line)

    async def run(self) -> None:
        """Write queued lines until cancelled; then write what is left."""
        try:
            while True:
                await asyncio.sleep(FLUSH_S)
                await self.flush()
        finally:
            await self.flush()

    async def flush(self) -> None:
        """Write every queued line now; a sink that fails is counted and the lines are not retried."""
        if not self._queue:
            return
        lines = list(self._queue)
        self._queue.clear()
        for sink in self.sinks:
            try:
                await asyncio.to_thread(sink.write, lines)
            except OSError as exc:
                self.metrics.count(self.metrics.audit_errors, sink.name)
                logger.error("audit sink %s failed: %s", sink.name, exc)

    def close(self) -> None:
        """Close every sink."""
        for sink in self.sinks:
            try:
                sink.close()
            except OSError as exc:
                logger.error("audit sink %s failed to close: %s", sink.name, exc)


def sinks_for(targets: Iterable[str]) -> list[Sink]:
    """Sinks from `--audit` values: `stdout`, or a file path (`{pid}` is replaced by the process id)."""
    return [StdoutSink() if target == "stdout" else FileSink(target) for target in targets]


def verify(lines: Iterable[bytes]) -> Iterator[str]:
    """Every break in the chains of the given lines, in order: a removed, edited or reordered record."""
    last: dict[str, tuple[str, int]] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = orjson.loads(line)
            chain, seq, prev = record["chain"], record["seq"], record["prev"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            yield f"line {number}: not an audit record"
            continue
        expected_hash, expected_seq = last.get(chain, (GENESIS, 0))
        if chain in last and seq != expected_seq + 1:
            yield f"line {number}: chain {chain} jumps from seq {expected_seq} to {seq} (records removed)"
        elif prev != expected_hash and (chain in last or seq == 1):
            yield f"line {number}: chain {chain} seq {seq} does not follow the record before it (edited or removed)"
        last[chain] = (hashlib.sha256(line if line.endswith(b"\n") else line + b"\n").hexdigest(), seq)
