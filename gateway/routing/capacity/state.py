"""Every capacity gauge of a policy, their pollers, and the set of full upstreams decisions read."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping

import aiohttp

from gateway.operations.metrics import Metrics
from gateway.routing.capacity.gauge import Gauge, View
from gateway.routing.capacity.poller import Poller
from gateway.routing.policy.model import Policy

NONE_FULL: frozenset[str] = frozenset()


class Capacity:
    """The load of every upstream with a `capacity` block; rebuilt (and re-polled) when the policy changes."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.gauges: dict[str, Gauge] = {}
        self.pollers: dict[str, Poller] = {}
        self.tasks: list[asyncio.Task[None]] = []
        self._last = NONE_FULL

    def start(self, policy: Policy, session: aiohttp.ClientSession) -> None:
        """Stop polling for the old policy and start a poller for each capacity block of this one."""
        self.stop()
        gauges, pollers = {}, {}
        for name, spec in policy.doc.upstreams.items():
            if spec.capacity is None:
                continue
            old = self.gauges.get(name)
            gauge = old if old is not None and old.spec == spec.capacity else Gauge(spec.capacity)
            gauges[name] = gauge
            pollers[name] = Poller(name, spec, gauge, session, self.metrics)
        self.gauges, self.pollers = gauges, pollers
        self.tasks = [asyncio.create_task(p.run(), name=f"capacity:{n}") for n, p in pollers.items()]

    def stop(self) -> None:
        """Cancel every poller task."""
        for task in self.tasks:
            task.cancel()
        self.tasks = []

    async def close(self) -> None:
        """Cancel every poller and wait for them to end."""
        tasks = self.tasks
        self.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)

    async def poll_now(self) -> None:
        """Read every engine once, now (tests and `switchyard` tools; the pollers do this on their own)."""
        await asyncio.gather(*(p.poll_once() for p in self.pollers.values()))

    def full(self, now: float | None = None) -> frozenset[str]:
        """The upstreams that are full now; the same frozenset while nothing changed."""
        if not self.gauges:
            return NONE_FULL
        at = time.monotonic() if now is None else now
        found = frozenset(name for name, gauge in self.gauges.items() if gauge.full(at))
        if found != self._last:
            for name in found ^ self._last:
                self.metrics.set(self.metrics.upstream_full, 1.0 if name in found else 0.0, name)
            self._last = found
        return self._last

    def sent(self, upstream: str) -> None:
        """Count a request sent to upstream since its last reading (no effect on upstreams without capacity)."""
        gauge = self.gauges.get(upstream)
        if gauge is not None:
            gauge.count_sent()

    def view(self, upstream: str) -> View | None:
        """The load behind upstream's state, for the audit trail; None without a capacity block."""
        gauge = self.gauges.get(upstream)
        return None if gauge is None else gauge.view(time.monotonic())


def full_from_loads(policy: Policy, loads: Mapping[str, str | float]) -> frozenset[str]:
    """The full upstreams a given load map stands for (`policy explain --load`, `load:` in cases).

    Each value is `full`, `open`, or a queue length judged against the upstream's max_waiting.
    ValueError names the first unknown upstream or unreadable value.
    """
    full = set()
    for name, value in loads.items():
        spec = policy.doc.upstreams.get(name)
        if spec is None:
            raise ValueError(f"load: upstream '{name}' is not in the policy")
        if value in ("full", "open"):
            if value == "full":
                full.add(name)
            continue
        if spec.capacity is None or spec.capacity.max_waiting is None:
            raise ValueError(f"load: {name}={value}: a queue length needs capacity.max_waiting on {name}; "
                             "give full or open")
        try:
            waiting = float(value)
        except ValueError:
            raise ValueError(f"load: {name}={value}: give full, open or a queue length") from None
        if waiting > spec.capacity.max_waiting:
            full.add(name)
    return frozenset(full)
