"""Time the detectors: scan() with every built-in over 4 KB prompts (p50/p99 in microseconds), then every detector
alone on adversarial inputs up to the body limit (worst case per MB), then whole bodies classified.

    python scripts/bench_detectors.py              # everything, adversarial inputs of 1 MB and whole bodies of 10 MiB
    python scripts/bench_detectors.py --mb 10      # adversarial inputs of 10 MB
    python scripts/bench_detectors.py --bodies     # only the whole bodies
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import statistics
import time
import unicodedata
from collections.abc import Callable

import orjson

from gateway.asgi import parse_object
from gateway.routing import classify, detectors, normalise
from gateway.routing.policy.model import Policy
from gateway.serving.app import DEFAULT_MAX_BODY

SIZE = 4096
ROUNDS = 5_000
TICK = 0.005

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


# Japanese prose as it is usually typed: ideographic spaces and fullwidth digits and punctuation, which NFKC folds.
CJK = ("\u304a\u5ba2\u69d8\u306e\u3054\u6ce8\u6587\uff08\u756a\u53f7\uff11\uff12\uff13\uff09"
       "\u3092\u78ba\u8a8d\u3057\u307e\u3057\u305f\uff01\u3000")


# Every character below U+0800 that NFKC or the fold changes: compatibility forms (some of them a space and an accent
# once folded), digits, format characters and dashes, each as often as the others.
MANY = "".join(chr(code) for code in range(0x80, 0x800) if unicodedata.normalize("NFKC", chr(code)) != chr(code)
               or unicodedata.category(chr(code)) in ("Cf", "Zs", "Pd", "Nd"))


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


MB = 1024 * 1024
# Adversarial units, each repeated to the input size: what makes a detector look at many candidates, or a regex
# engine at many positions.
ADVERSARIAL = {
    "400 KB of '4111 '": ("4111 ", 400 * 1024),
    "'4111 ' repeated": ("4111 ", None),
    "'2345 6789 0123 ' (card-shaped)": ("2345 6789 0123 ", None),
    "one long digit run": ("1234567890", None),
    "'12 ' repeated separators": ("12 ", None),
    "'123-' repeated": ("123-", None),
    "'4111.' repeated": ("4111.", None),
    "runs of 60 digits": ("0" * 60 + " ", None),
    "'a123456 ' letter clusters": ("a123456 ", None),
    "'123456,' six-digit runs": ("123456,", None),
    "'+12345 ' plus and digits": ("+12345 ", None),
    "'+1 ' repeated": ("+1 ", None),
    "'(12) ' repeated": ("(12) ", None),
    "'AB12 ' repeated": ("AB12 ", None),
    "'DE89 ' repeated": ("DE89 ", None),
    "'AB 12 34 56 ' (NINO-shaped)": ("AB 12 34 56 ", None),
    "'123.45.6789 ' (SSN-shaped)": ("123.45.6789 ", None),
    "'a@' repeated": ("a@", None),
    "'/a@b.cd ' failing emails": ("/a@b.cd ", None),
    "one long word": ("abcdefghij", None),
    "spaces": (" ", None),
    "dots": (".", None),
    "'%41' percent-escapes": ("%41", None),
    "'\\u0041' backslash escapes": ("\\u0041", None),
    "zero-width spaces": ("a\u200b", None),
    "Arabic-Indic digits": ("\u0664\u0661\u0661\u0661 ", None),
    "mixed foldable characters": ("".join(map(chr, range(0x660, 0x66a))) + "\u200b\u00ad\u2013\u2014\u3000", None),
    "emoji": ("hi \U0001f600 ", None),
    "CJK prose": ("\u6570\u5b57\u5361\u7247", None),
    "CJK prose, fullwidth forms": (CJK, None),
    "prose": (PROSE, None),
}


def adversarial(size: int) -> None:
    """Print each detector's worst time per MB of input, over every adversarial input of size bytes (UTF-8)."""
    found = [detectors.builtin(name) for name in sorted(detectors.BUILTIN)]
    worst: dict[str, tuple[float, str]] = {}
    print(f"\nadversarial inputs of {size / MB:.1f} MB: scan() with every detector, ms per MB")
    for label, (unit, fixed) in ADVERSARIAL.items():
        text = _sized(unit, fixed or size)
        megabytes = len(text.encode("utf-8", "surrogatepass")) / MB
        for detector in found:
            elapsed = _best(functools.partial(detector.search, text))
            per_mb = elapsed * 1000 / megabytes
            if per_mb > worst.get(detector.name, (0.0, ""))[0]:
                worst[detector.name] = (per_mb, label)
        hit = detectors.scan(found, text)
        elapsed = _best(functools.partial(detectors.scan, found, text))
        print(f"  {label:36} {megabytes:5.1f} MB  hit={hit!s:12} {elapsed * 1000 / megabytes:7.1f} ms/MB")
    print("worst case per detector (each alone, text normalised each time):")
    for name, (per_mb, label) in sorted(worst.items()):
        print(f"  {name:12} {per_mb:7.1f} ms/MB  on {label}")


def whole_bodies() -> None:
    """Print the time to parse and classify whole bodies at the body limit, the way the gateway does (with the
    garbage collector set as `switchyard serve` sets it), and how long the event loop waited at worst meanwhile."""
    from gateway.serving.server import YOUNG_OBJECTS_BEFORE_GC

    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_OBJECTS_BEFORE_GC, *gc.get_threshold()[1:])
    policy = _policy()
    print(f"\nwhole bodies of {DEFAULT_MAX_BODY / MB:.0f} MiB: parse_object, then classify.features (all detectors); "
          f"loop gap: the longest between {TICK * 1000:.0f} ms ticks on the loop while classified in a thread")
    unit_text = {"prose": PROSE, "'4111 '": "4111 ", "'12 '": "12 ", "'a123456 '": "a123456 ",
                 "Arabic-Indic digits": "\u0664\u0661\u0661\u0661 ", "zero-width spaces": "a\u200b",
                 "mixed foldable characters": "".join(map(chr, range(0x660, 0x66A))) + "\u200b\u00ad\u2013\u2014\u3000",
                 "emoji": "hi \U0001f600 ", "'\\u0041' escapes": "\\u0041", "CJK prose, fullwidth forms": CJK,
                 "ISO dates": "2024-03-15 ", "'0123456789-- '": "0123456789-- ",
                 "fullwidth ASCII forms": "".join(map(chr, range(0xFF01, 0xFF5F))), "122 foldable below U+0800": MANY,
                 "'123456,'": "123456,", "'+12345 '": "+12345 ", "'e' and a combining accent": "e\u0301 ",
                 "log lines": "Deploy v2.31.0 on 2024-03-15 at 09:00 UTC; ticket PLAT-2291, order 88231. ",
                 # dense in pairs of digits, yet under the count past which the detectors call a text crowded
                 "dates under the pair budget": "2024-03-15 lorem ipsum dol ",
                 "'123456,' under the pair budget": "123456, lorem ipsum dolor "}
    size = DEFAULT_MAX_BODY - 200
    contents = {label: _sized(unit, size) for label, unit in unit_text.items()}
    # about half as much to fold as normalise reads before it calls a text unread, then prose
    folded = MANY * (normalise.FOLD_BUDGET // (200 * len(MANY)))
    contents["foldable under the budget, then prose"] = folded + _sized(PROSE, size - len(folded.encode()))
    prose: list[float] = []  # the prose body's CPU time, which the others are given as a multiple of
    for label, content in contents.items():
        raw = orjson.dumps({"model": "chat", "messages": [{"role": "user", "content": content}]})
        _report(label, raw, policy, prose)
    many = [{"role": "user", "content": f"message {i} about order {i * 7919}"} for i in range(150_000)]
    _report("150,000 small messages", orjson.dumps({"model": "chat", "messages": many}), policy, prose)
    tools = [{"type": "function", "function": {"name": f"f{i}", "description": "look it up " * 8, "parameters": {
        "type": "object", "properties": {f"p{j}": {"type": "string", "enum": ["a", "b"]} for j in range(4)}}}}
        for i in range(20_000)]
    _report("20,000 tool definitions", orjson.dumps({"model": "chat", "messages": [{"role": "user", "content": "hi"}],
                                                     "tools": tools}), policy, prose)


def _report(label: str, raw: bytes, policy: Policy, prose: list[float]) -> None:
    """Time one body through parse and through classification (wall clock, and the CPU time of the classifying
    thread, which a loaded machine inflates less), and print what it was classified as and the worst wait of the
    event loop while it was classified in a worker thread."""
    parse = _best(lambda: parse_object(raw), rounds=3)
    body = parse_object(raw)
    elapsed = _best(lambda: classify.features(policy, "acme", "chat", body, {}), rounds=3)
    cpu = _best(lambda: classify.features(policy, "acme", "chat", body, {}), rounds=3, clock=time.thread_time)
    prose[:] = prose or [cpu]
    found = classify.features(policy, "acme", "chat", body, {})
    gap = _worst_gap(lambda: classify.features(policy, "acme", "chat", body, {}))
    print(f"  {label:28} {len(raw) / MB:5.1f} MiB  parse {parse * 1000:6.1f} ms  classify {elapsed * 1000:6.1f} ms  "
          f"cpu {cpu * 1000:6.1f} ms ({cpu / prose[0]:4.1f}x prose)  loop gap {gap * 1000:5.1f} ms  "
          f"class={found.data_class} prompt_tokens={found.prompt_tokens}")


def _worst_gap(run: Callable[[], object]) -> float:
    """The longest time between two ticks of a task that sleeps TICK at a time on the event loop, in seconds, while
    run runs in a worker thread (as classify.features_of runs a big body): what a /healthz would wait, at most."""
    async def ticking() -> float:
        worker = asyncio.ensure_future(asyncio.to_thread(run))
        worst, last = 0.0, time.perf_counter()
        while not worker.done():
            await asyncio.sleep(TICK)
            now = time.perf_counter()
            worst, last = max(worst, now - last), now
        await worker
        return worst

    return asyncio.run(ticking())


def _policy() -> Policy:
    from gateway.routing.policy.schema import Document

    doc = Document.model_validate({
        "version": 1, "upstreams": {"u": {"base_url": "http://u/v1", "model": "m", "hosting": "self",
                                          "cost": {"input_per_mtok": 1, "output_per_mtok": 1}}},
        "models": {"chat": {"candidates": ["u"]}}, "tenants": {"acme": {"keys": ["sha256:" + "0" * 64]}},
        "data_classes": {"public": {}, "personal": {"hosting": ["self"]}},
        "classify": {"detectors": [{"detect": sorted(detectors.BUILTIN), "class": "personal"}]}})
    return Policy.build(doc, "bench", "bench", {})


def _sized(unit: str, size: int) -> str:
    """unit repeated to about size bytes of UTF-8."""
    per_unit = len(unit.encode("utf-8", "surrogatepass"))
    return unit * max(1, size // per_unit)


def _best(run: Callable[[], object], rounds: int = 2, clock: Callable[[], float] = time.perf_counter) -> float:
    """The fastest of rounds runs by clock, in seconds (the machine is shared: the fastest is the least disturbed)."""
    times = []
    for _ in range(rounds):
        started = clock()
        run()
        times.append(clock() - started)
    return min(times)


def main() -> None:
    """Print one line per workload."""
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument("--mb", type=float, default=1.0, help="size of each adversarial input in MB (default: 1)")
    options.add_argument("--skip-small", action="store_true", help="skip the 4 KB prompt timings")
    options.add_argument("--bodies", action="store_true", help="only the whole bodies")
    args = options.parse_args()
    if not args.bodies:
        if not args.skip_small:
            small()
        adversarial(int(args.mb * MB))
    whole_bodies()


def small() -> None:
    """p50 and p99 of scan() on 4 KB prompts."""
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
