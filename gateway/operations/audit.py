"""The audit trail: one JSON line per request, chained and sealed, written off the request path.

Each record ends in `mac`, an HMAC-SHA256 of the rest of its line under the gateway's audit key (a plain
SHA-256 when it has none), and carries `prev`, the mac of the record before it in the same chain (one chain
per process, named by `chain`), and `seq`. Each audit file begins with an anchor line, sealed the same way,
naming the chain, seq and prev of the record that follows it and the mac of the line before it (the end of
the previous file, or of the file it was appended to). So without the key, no record can be edited, added or
removed, a file's head or tail cut across rotation, or a chain recomputed, without `switchyard audit verify`
saying where. Records hold decisions, attempts, tokens and cost: never message content, never a key.
Unauthenticated requests (401) are folded into one sampled record a second, with their count.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import re
import socket
import sys
import time
from collections import deque
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

import orjson

from gateway.operations.metrics import Metrics

logger = logging.getLogger("switchyard.audit")
GENESIS = "0" * 64
FLUSH_S = 0.2
SAMPLE_S = 1.0  # at most one record of unauthenticated requests this often
MAX_QUEUE = 100_000
MIN_KEY_BYTES = 16
TAIL_BYTES = 65536  # enough for the last line of an audit file
MAC_TAIL = re.compile(rb',"mac":"([0-9a-f]{64})"\}$')


class Seal:
    """Seals audit lines: HMAC-SHA256 under the audit key, or plain SHA-256 without one."""

    def __init__(self, key: bytes | None) -> None:
        self.key = key

    def mac(self, body: bytes) -> str:
        """The mac of a line's body (the line without its `mac` field)."""
        if self.key is None:
            return hashlib.sha256(body).hexdigest()
        return hmac.new(self.key, body, hashlib.sha256).hexdigest()

    def line(self, fields: Mapping[str, Any]) -> tuple[bytes, str]:
        """fields as a sealed line, and its mac."""
        body = orjson.dumps(fields)
        mac = self.mac(body)
        return body[:-1] + b',"mac":"' + mac.encode() + b'"}\n', mac


def unseal(line: bytes) -> tuple[bytes, str] | None:
    """A sealed line's body and mac, or None when it carries none."""
    found = MAC_TAIL.search(line.rstrip(b"\r\n"))
    if found is None:
        return None
    return line[:found.start()] + b"}", found.group(1).decode()


def read_key(path: str | None, environ: Mapping[str, str] = os.environ) -> bytes | None:
    """The audit key from the file at path, else $SWITCHYARD_AUDIT_KEY; ValueError if it is too short to trust."""
    if path:
        key = Path(path).read_bytes().strip()
        where = path
    elif environ.get("SWITCHYARD_AUDIT_KEY"):
        key, where = environ["SWITCHYARD_AUDIT_KEY"].strip().encode(), "$SWITCHYARD_AUDIT_KEY"
    else:
        return None
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"{where}: an audit key needs at least {MIN_KEY_BYTES} bytes (try `openssl rand -hex 32`)")
    return key


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
    """Audit lines in a file that rotates at max_bytes, keeping `backups` old files (PATH.1 is the newest).

    Each file it opens, or appends to, gets an anchor line before its first record."""

    name = "file"

    def __init__(self, path: str, seal: Seal, max_bytes: int = 100 * 1024 * 1024, backups: int = 10) -> None:
        self.path = Path(path.replace("{pid}", str(os.getpid())))
        self.seal = seal
        self.max_bytes = max_bytes
        self.backups = backups
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._after = _last_mac(self.path)
        self._anchored = False
        self._file = self.path.open("ab")

    def write(self, lines: list[bytes]) -> None:
        data = b"".join(lines)
        if self._file.tell() + len(data) > self.max_bytes and self._file.tell() > 0:
            self._rotate()
        if not self._anchored:
            data = self._anchor(lines[0]) + data
            self._anchored = True
        self._file.write(data)
        self._file.flush()
        self._after = _mac_of(lines[-1])

    def _anchor(self, first: bytes) -> bytes:
        record = orjson.loads(first)
        fields = {"anchor": {"file": self.path.name, "chain": record["chain"], "seq": record["seq"],
                             "prev": record["prev"], "after": self._after,
                             "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}}
        return self.seal.line(fields)[0]

    def _rotate(self) -> None:
        self._file.close()
        for index in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{index}")
            if older.exists():
                older.replace(self.path.with_name(f"{self.path.name}.{index + 1}"))
        self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        self._file = self.path.open("ab")
        self._anchored = False

    def close(self) -> None:
        self._file.close()


def _mac_of(line: bytes) -> str | None:
    sealed = unseal(line)
    return sealed[1] if sealed else None


def _last_mac(path: Path) -> str | None:
    """The mac of the last line of an existing audit file, which a new anchor follows (None for a device)."""
    if not path.is_file():
        return None
    with path.open("rb") as file:
        size = file.seek(0, os.SEEK_END)
        file.seek(max(0, size - TAIL_BYTES))
        tail = file.read(TAIL_BYTES).rstrip(b"\n").rsplit(b"\n", 1)[-1]
    return _mac_of(tail) if tail else None


class AuditLog:
    """Chains records as they come and hands them to the sinks in batches from a background task."""

    def __init__(self, sinks: list[Sink], metrics: Metrics, seal: Seal | None = None) -> None:
        self.sinks = sinks
        self.metrics = metrics
        self.seal = seal or Seal(None)
        self.chain = f"{socket.gethostname()}:{os.getpid()}:{int(time.time())}"
        self._prev = GENESIS
        self._seq = 0
        self._queue: deque[bytes] = deque()
        self._refused = 0  # unauthenticated requests since the last sampled record
        self._refused_last: dict[str, Any] = {}
        self._sampled_at = -SAMPLE_S

    @property
    def enabled(self) -> bool:
        """Whether any sink is configured."""
        return bool(self.sinks)

    def record(self, fields: dict[str, Any]) -> None:
        """Chain one record and queue it (a 401 is only counted, see `_sample`); never blocks, never raises."""
        if fields.get("status") == 401:
            self._refused += 1
            self._refused_last = fields
            self.metrics.count(self.metrics.audit_unauthenticated)
            self._sample(time.monotonic())
            return
        self._append(fields)

    def _sample(self, now: float) -> None:
        """Write one record for the unauthenticated requests since the last, at most once every SAMPLE_S."""
        if not self._refused or now - self._sampled_at < SAMPLE_S:
            return
        self._append({**self._refused_last, "sampled": {"unauthenticated": self._refused,
                                                        "seconds": round(min(now - self._sampled_at, 1e6), 3)}})
        self._refused, self._sampled_at = 0, now

    def _append(self, fields: dict[str, Any]) -> None:
        self._seq += 1
        line, self._prev = self.seal.line({**fields, "chain": self.chain, "seq": self._seq, "prev": self._prev})
        if len(self._queue) >= MAX_QUEUE:
            self.metrics.count(self.metrics.audit_errors, "queue_full")
            return
        self._queue.append(line)

    async def run(self) -> None:
        """Write queued lines until cancelled; then write what is left."""
        try:
            while True:
                await asyncio.sleep(FLUSH_S)
                self._sample(time.monotonic())
                await self.flush()
        finally:
            self._sample(time.monotonic() + SAMPLE_S)
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


def sinks_for(targets: Iterable[str], seal: Seal) -> list[Sink]:
    """Sinks from `--audit` values: `stdout`, or a file path (`{pid}` is replaced by the process id)."""
    return [StdoutSink() if target == "stdout" else FileSink(target, seal) for target in targets]
