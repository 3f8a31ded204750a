"""Background readers of engines' /metrics: one task per upstream with a `capacity` block, never on a request."""

from __future__ import annotations

import asyncio
import logging
import time
from urllib.parse import urlsplit

import aiohttp

from gateway.operations.metrics import Metrics
from gateway.routing.capacity.gauge import Gauge
from gateway.routing.capacity.signals import NotAReading, Reading, parse
from gateway.routing.policy.schema import Upstream

MAX_BYTES = 4 * 1024 * 1024  # a vLLM page is ~100 KiB; more than this is not a metrics page
OFFLOAD_BYTES = 256 * 1024  # a page bigger than this is read in a worker thread, off the event loop
logger = logging.getLogger("switchyard.capacity")


PLAIN = {"accept-encoding": "identity"}  # an engine's page is small; never inflate what an engine sends


def new_session() -> aiohttp.ClientSession:
    """The session capacity polls share: no pool limit, bodies never inflated, and no cookies kept."""
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=60, enable_cleanup_closed=True)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None),
                                 auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar())


class PollFailed(Exception):
    """A poll that produced no reading, with why."""


async def _whole(content: aiohttp.StreamReader) -> bytes:
    """The whole page, read to its end; PollFailed once it passes MAX_BYTES (a cut page could misread a number)."""
    pieces: list[bytes] = []
    size = 0
    async for chunk in content.iter_any():
        size += len(chunk)
        if size > MAX_BYTES:
            raise PollFailed(f"the page is larger than {MAX_BYTES} bytes")
        pieces.append(chunk)
    return b"".join(pieces)


def metrics_url(spec: Upstream) -> str:
    """Where the upstream's metrics are read: capacity.metrics_url, else the origin of base_url + /metrics."""
    assert spec.capacity is not None
    if spec.capacity.metrics_url:
        return spec.capacity.metrics_url
    assert spec.base_url is not None
    parts = urlsplit(spec.base_url)
    return f"{parts.scheme}://{parts.netloc}/metrics"


class Poller:
    """Reads one upstream's metrics every poll_ms into its gauge."""

    def __init__(self, name: str, spec: Upstream, gauge: Gauge, session: aiohttp.ClientSession,
                 metrics: Metrics) -> None:
        assert spec.capacity is not None
        self.name = name
        self.url = metrics_url(spec)
        self.engine = spec.capacity.engine
        self.gauge = gauge
        self.session = session
        self.metrics = metrics
        interval = spec.capacity.poll_ms / 1000
        self.interval = interval
        self.timeout = aiohttp.ClientTimeout(total=min(2.0, max(0.25, interval)))

    async def run(self) -> None:
        """Poll until cancelled."""
        while True:
            await self.poll_once()
            await asyncio.sleep(self.interval)

    async def poll_once(self) -> bool:
        """Read the metrics once into the gauge; False (and counted) when no reading came."""
        try:
            reading = await self._read()
        except PollFailed as exc:
            self.gauge.failed()
            self.metrics.count(self.metrics.capacity_poll_errors, self.name)
            if self.gauge.failures == 1:
                logger.warning("capacity: cannot read %s's metrics at %s: %s", self.name, self.url, exc)
            self._show(time.monotonic())
            return False
        now = time.monotonic()
        self.gauge.update(reading, now)
        self._show(now)
        return True

    async def _read(self) -> Reading:
        try:
            async with self.session.get(self.url, timeout=self.timeout, allow_redirects=False,
                                        headers=PLAIN) as response:
                if response.status != 200:
                    raise PollFailed(f"HTTP {response.status}")
                encoding = response.headers.get("content-encoding", "identity").strip().lower()
                if encoding != "identity":
                    raise PollFailed(f"content-encoding '{encoding[:32]}' was not asked for")
                raw = await _whole(response.content)
            text = raw.decode("utf-8", errors="replace")
            if len(raw) > OFFLOAD_BYTES:  # tens of thousands of series take a tenth of a second to read
                return await asyncio.to_thread(parse, self.engine, text)
            return parse(self.engine, text)
        except (TimeoutError, aiohttp.ClientError, NotAReading) as exc:
            raise PollFailed(str(exc) or type(exc).__name__) from None

    def _show(self, now: float) -> None:
        """Export the reading and the full state as gauges."""
        m, reading = self.metrics, self.gauge.reading
        if reading is not None and self.gauge.fresh(now):
            m.set(m.upstream_load, reading.waiting, self.name, "waiting")
            m.set(m.upstream_load, reading.running, self.name, "running")
            if reading.kv_cache is not None:
                m.set(m.upstream_load, reading.kv_cache, self.name, "kv_cache")
        m.set(m.upstream_full, 1.0 if self.gauge.full(now) else 0.0, self.name)
