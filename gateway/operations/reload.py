"""Hot reload: notice a changed policy (file change or SIGHUP), check it, and swap it in whole or not at all."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Callable
from pathlib import Path

from gateway.errors import PolicyError
from gateway.operations.metrics import Metrics
from gateway.routing.policy.loader import MAX_FILE_BYTES, load_policy, policy_files
from gateway.routing.policy.model import Policy
from gateway.upstreams.catalog import LitellmCatalog

logger = logging.getLogger("switchyard.reload")
Fingerprint = tuple[tuple[str, str], ...]


def fingerprint(path: Path) -> Fingerprint:
    """Names and content hashes of a policy's files: a change in any means reload.

    Sizes and modification times are not enough: a file swapped for one of the same size and time (a symlink
    moved, a copy that keeps times) is a change too. Reading a policy's few KiB every interval costs little."""
    found = []
    for file in policy_files(path) if path.exists() else []:
        try:
            with file.open("rb") as opened:
                digest = hashlib.sha256(opened.read(MAX_FILE_BYTES + 1)).hexdigest()  # a bigger one is refused
        except OSError:
            continue
        found.append((str(file), digest))
    return tuple(found)


class Reloader:
    """Watches a policy path and hands each new valid policy to `apply`; a broken one is refused and counted."""

    def __init__(self, path: str, metrics: Metrics, apply: Callable[[Policy], None], interval_s: float) -> None:
        self.path = Path(path)
        self.metrics = metrics
        self.apply = apply
        self.interval_s = interval_s
        self.wanted = asyncio.Event()
        self._seen = self._pending = fingerprint(self.path)

    def request(self) -> None:
        """Reload now, changed or not (SIGHUP)."""
        self.wanted.set()

    async def run(self) -> None:
        """Poll until cancelled; a change is loaded once the files have stayed the same for one interval."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wanted.wait(), self.interval_s if self.interval_s > 0 else None)
            forced = self.wanted.is_set()
            self.wanted.clear()
            current = fingerprint(self.path)
            settled = current == self._pending  # unchanged since the last look, so not caught mid-write
            if forced or (settled and current != self._seen):
                self._seen = self._pending = current
                await self.reload()
            else:
                self._pending = current

    async def reload(self) -> bool:
        """Load the policy again; swap it in if it passes check. Returns whether it did."""
        try:
            policy = await asyncio.to_thread(load_policy, self.path, None, LitellmCatalog())
        except PolicyError as exc:
            self.metrics.count(self.metrics.policy_reloads, "error")
            logger.error("policy reload refused, the old policy keeps serving: %s", "; ".join(exc.problems))
            return False
        self.apply(policy)
        self.metrics.count(self.metrics.policy_reloads, "ok")
        logger.info("policy reloaded from %s: %s", self.path, policy.hash)
        return True
