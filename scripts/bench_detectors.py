"""Time scan() with every built-in detector over 4 KB prompts and print p50/p99 in microseconds."""

from __future__ import annotations

import gc
import statistics
import time

from gateway import detectors

SIZE = 4096
ROUNDS = 20_000

PROSE = """\
You are helping the platform team prepare the quarterly planning review. Summarise the notes below in plain English \
for an audience of engineering managers, keep it under 400 words, and end with a short list of open questions.

Notes from the planning session on 2024-03-15 (attendees: platform, data, billing and support leads):

1. Reliability. Availability for the public API was 99.95% over the last 90 days, slightly below the 99.97% target. \
Two incidents drove most of the downtime: the cache cluster failover on 12 February (about 41 minutes of elevated \
error rates) and the certificate renewal that slipped on 3 March (17 minutes). The team wants to move renewals to an \
automated job running every 6 hours and to add a second region before Q3.

2. Cost. Cloud spend came in at $184,200 for the quarter against a budget of $175,000, roughly 5.3% over. Most of the \
overrun came from GPU instances for the evaluation pipeline, which now runs 3 times a day instead of once. Finance \
asked whether we can shift batch evaluation to spot capacity; the estimate is a 30-40% saving with some risk to the \
nightly schedule. Storage grew 12 TB, mostly logs kept for 400 days instead of the 180 required.

3. Upgrades. The service still runs Python 3.9 on a few workers; the plan is to finish the move to 3.11 by the end of \
April. Postgres goes from 13.4 to 16.2 in two steps, and the client library is pinned to version 2.31.0 until the \
retry bug in 2.32 is fixed upstream. Kubernetes nodes move from 1.27 to 1.29 after the freeze ends on 22 April.

4. Hiring. Two offers accepted, one pending. The support rotation is stretched: 14 people cover 24/7 with a median \
response time of 11 minutes, and ticket volume rose 18% after the pricing change. The proposal is to add a follow-the-\
sun handover at 09:00 and 17:00 UTC and to publish a status page update within 15 minutes of any severity 1 incident.

5. Roadmap. Priorities for next quarter, in order: regional failover, the usage-based billing rollout (phase 2 of 3), \
an audit log export for enterprise customers, and reducing p95 latency on the search endpoint from 850 ms to under \
500 ms. The data team will deliver the new metrics pipeline in 6 to 8 weeks; until then dashboards may lag by up to \
an hour. Ticket PLAT-2291 tracks the cache work and PLAT-2304 the billing migration.

6. Risks. The vendor contract for the message queue expires on 30 June and renewal pricing is expected to rise by \
about 20%. There is a single engineer who understands the legacy export job written in 2017; knowledge transfer is \
scheduled for the next two sprints. Load tests at 3x current peak traffic (about 12,000 requests per second) showed \
the gateway holding up but the database connection pool saturating at around 2,500 connections.

Please keep the tone neutral, avoid blame, and do not invent numbers that are not in the notes. If something is \
ambiguous, say so rather than guessing. Format the answer as a short executive summary paragraph followed by one \
section per numbered topic, each with two or three bullet points, then the open questions. Use metric units and \
ISO dates throughout, and spell out any abbreviation the first time it appears. Thank you.
"""

CODE = '''\
from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

log = logging.getLogger(__name__)

RETRY_DELAYS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0)
MAX_BODY = 16 * 1024 * 1024
DEFAULT_PORT = 8080
CACHE_TTL = timedelta(minutes=15)
VERSION = "2.31.0"


@dataclass(frozen=True, slots=True)
class Upstream:
    name: str
    url: str
    weight: float = 1.0
    timeout: float = 30.0
    tags: tuple[str, ...] = field(default_factory=tuple)


@dataclass
class Stats:
    requests: int = 0
    failures: int = 0
    latency_ms: list[float] = field(default_factory=list)

    def record(self, ok: bool, elapsed: float) -> None:
        self.requests += 1
        self.failures += 0 if ok else 1
        self.latency_ms.append(round(elapsed * 1000.0, 3))
        if len(self.latency_ms) > 10_000:
            del self.latency_ms[:5_000]

    @property
    def error_rate(self) -> float:
        return self.failures / self.requests if self.requests else 0.0


def cache_key(model: str, body: bytes) -> str:
    digest = hashlib.sha256(body).hexdigest()[:16]
    return f"{model}:{digest}"


def parse_timestamp(value: str) -> datetime:
    # e.g. "2024-01-15T10:30:00Z" or "2024-01-15 10:30:00.123456+00:00"
    value = value.replace("Z", "+00:00")
    return datetime.fromisoformat(value).astimezone(timezone.utc)


async def call_with_retries(send, request, attempts: int = 4):
    for attempt, delay in enumerate(RETRY_DELAYS[:attempts]):
        try:
            return await asyncio.wait_for(send(request), timeout=30.0)
        except (TimeoutError, ConnectionError) as exc:
            log.warning("attempt %d failed: %s; retrying in %.2fs", attempt + 1, exc, delay)
            await asyncio.sleep(delay)
    raise RuntimeError(f"gave up after {attempts} attempts")


def pick(upstreams: list[Upstream], stats: dict[str, Stats]) -> Upstream:
    best, score = upstreams[0], float("inf")
    for upstream in upstreams:
        s = stats.get(upstream.name) or Stats()
        value = (1.0 + 4.0 * s.error_rate) / max(upstream.weight, 1e-9)
        if value < score:
            best, score = upstream, value
    return best


UPSTREAMS = [
    Upstream("primary", "http://10.0.12.4:8000/v1", weight=3.0, tags=("gpu", "a100")),
    Upstream("secondary", "http://10.0.12.5:8000/v1", weight=1.5, tags=("gpu", "l4")),
    Upstream("fallback", "https://api.example.net/v1", weight=0.5, timeout=60.0),
]

MATRIX = [[0.25, 0.5, 0.75], [1.0, 1.25, 1.5], [1.75, 2.0, 2.25]]
COMMIT = "9fceb02d0ae598e95dc970b74767f19372d61af8"
REQUEST_ID = "123e4567-e89b-12d3-a456-426614174000"


@app.route("/healthz")
async def healthz(request):
    return {"ok": True, "version": VERSION, "uptime_s": 86400, "checked": "2024-01-15T10:30:00Z"}
'''


def fill(text: str, size: int = SIZE) -> str:
    """Text repeated and cut to exactly size characters."""
    return (text * (size // len(text) + 1))[:size]


def measure(text: str) -> tuple[float, float]:
    """p50 and p99 of scan() over text with all built-ins, in microseconds."""
    found = [detectors.builtin(name) for name in ("email", "phone", "credit_card", "iban", "national_id")]
    clock = time.perf_counter_ns
    samples = []
    gc.disable()
    try:
        for _ in range(ROUNDS):
            start = clock()
            detectors.scan(found, text)
            samples.append(clock() - start)
    finally:
        gc.enable()
    cuts = statistics.quantiles(samples, n=100)
    return cuts[49] / 1000, cuts[98] / 1000


def main() -> None:
    """Print one line per workload."""
    iban = " Please refund to DE89 3704 0044 0532 0130 00."
    workloads = {
        "clean 4KB prompt": fill(PROSE),
        "4KB prompt, IBAN at end": fill(PROSE, SIZE - len(iban)) + iban,
        "4KB of code": fill(CODE),
    }
    found = [detectors.builtin(name) for name in sorted(detectors.BUILTIN)]
    for label, text in workloads.items():
        p50, p99 = measure(text)
        print(f"{label:28} hit={detectors.scan(found, text)!s:12} p50={p50:6.1f}us  p99={p99:6.1f}us")


if __name__ == "__main__":
    main()
