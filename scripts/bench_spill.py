"""Capacity-aware routing against the static cost order, on a load ramp past a stand-in engine's capacity and back.

    python scripts/bench_spill.py [--slots 4] [--service-s 0.25] [--max-waiting 4] [--phase-s 5]
                                  [--ramp 0.5,1,2,3,1,0.5] [--plot spill.png]

A queueing stand-in engine (`slots` requests at once, each holding its slot `service_s`, the rest waiting)
is the cheap self-hosted upstream; a stand-in API that answers at once is the dear one. Open-loop Poisson
arrivals ramp through the given multiples of the engine's capacity (slots / service_s requests a second).
Printed per phase and mode: the share served self-hosted, the engine's busy fraction, requests spilled,
p95 time to first token per upstream, cost per 1,000 requests, and the bound no router can beat (the engine
busy whenever demand exceeds it, only the excess spilled). Writes a PNG when matplotlib is installed.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import random
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import uvicorn
import yaml

from gateway.serving.app import Gateway, Settings
from gateway.tools.standin import QueueingEngine, StandIn

KEY = "sk-sy-bench-key-0123456789abcdef0123456789"
PRICES = {"qwen": {"gpu_hour_usd": 2.0, "tokens_per_second": 2000},
          "api": {"input_per_mtok": 3.0, "output_per_mtok": 15.0}}
PROMPT_TOKENS, COMPLETION_TOKENS = 10, 9  # what the stand-ins report for every answer


@dataclass
class Done:
    """One request's outcome."""

    sent: float
    phase: int
    upstream: str = "none"
    spilled: bool = False
    ttft: float = 0.0


@dataclass
class Run:
    """One mode's requests and the engine's busy samples."""

    mode: str
    done: list[Done] = field(default_factory=list)
    busy: list[tuple[float, float]] = field(default_factory=list)  # (time, busy fraction)


@asynccontextmanager
async def served(app: Any) -> Any:
    """An ASGI app on a loopback port until the block ends; yields its URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error", lifespan="on",
                                           loop="none", timeout_graceful_shutdown=1))
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn offers a flag, no event
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        await task


def policy(folder: Path, engine_url: str, api_url: str, capacity: dict[str, Any] | None) -> Path:
    """A route 'chat' by cost over the engine and the API; the engine with a capacity block or none."""
    qwen: dict[str, Any] = {"base_url": engine_url + "/v1", "model": "qwen", "hosting": "self", "region": "eu",
                            "cost": PRICES["qwen"]}
    if capacity:
        qwen["capacity"] = capacity
    doc = {"version": 1,
           "upstreams": {"qwen": qwen, "api": {"base_url": api_url + "/v1", "model": "api", "region": "us",
                                               "cost": PRICES["api"]}},
           "models": {"chat": {"candidates": ["api", "qwen"], "objective": "cost"}},
           "tenants": {"bench": {"keys": ["sha256:" + hashlib.sha256(KEY.encode()).hexdigest()]}},
           "resilience": {"ttft_timeout_s": 120, "per_try_timeout_s": 120, "deadline_s": 300,
                          "stream_idle_timeout_s": 120}}
    path = folder / f"policy-{'capacity' if capacity else 'static'}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def arrivals(rates: list[float], phase_s: float, seed: int) -> Iterator[tuple[float, int]]:
    """(offset in seconds, phase) of each arrival: Poisson at each phase's rate."""
    rng = random.Random(seed)
    for phase, rate in enumerate(rates):
        at = phase * phase_s
        while True:
            at += rng.expovariate(rate)
            if at >= (phase + 1) * phase_s:
                break
            yield at, phase


async def one(client: openai.AsyncOpenAI, done: Done, start: float) -> None:
    """Send one streamed request and note who answered and when its first chunk came."""
    raw = await client.chat.completions.with_raw_response.create(
        model="chat", messages=[{"role": "user", "content": "hi"}], stream=True)
    done.ttft = time.monotonic() - start - done.sent
    done.upstream = raw.headers.get("x-switchyard-upstream", "none")
    done.spilled = "x-switchyard-spilled-from" in raw.headers
    async for _ in await raw.parse():
        pass


async def sample_busy(engine: QueueingEngine, run: Run, start: float, stop: asyncio.Event) -> None:
    while not stop.is_set():
        run.busy.append((time.monotonic() - start, min(engine.running, engine.slots) / engine.slots))
        await asyncio.sleep(0.01)


async def run_mode(mode: str, args: argparse.Namespace, rates: list[float], folder: Path) -> Run:
    """One pass of the ramp with the engine's capacity block (mode 'capacity') or without (mode 'static')."""
    engine = QueueingEngine("qwen", slots=args.slots, service_s=args.service_s)
    capacity = {"engine": "vllm", "max_waiting": args.max_waiting, "poll_ms": args.poll_ms,
                "stale_ms": max(3000, 4 * args.poll_ms)} if mode == "capacity" else None
    run = Run(mode)
    async with served(engine) as engine_url, served(StandIn("api")) as api_url:
        gateway = Gateway(Settings(policy=str(policy(folder, engine_url, api_url, capacity)),
                                   reload_interval_s=0))
        async with served(gateway) as gateway_url:
            client = openai.AsyncOpenAI(base_url=gateway_url + "/v1", api_key=KEY, max_retries=0, timeout=300)
            start, stop = time.monotonic(), asyncio.Event()
            sampler = asyncio.create_task(sample_busy(engine, run, start, stop))
            tasks = []
            for at, phase in arrivals(rates, args.phase_s, args.seed):
                await asyncio.sleep(max(0.0, start + at - time.monotonic()))
                done = Done(at, phase)
                run.done.append(done)
                tasks.append(asyncio.create_task(one(client, done, start)))
            await asyncio.gather(*tasks, return_exceptions=True)
            stop.set()
            await sampler
            await client.close()
    return run


def p95(values: list[float]) -> float | None:
    if len(values) < 2:
        return values[0] if values else None
    return statistics.quantiles(values, n=20)[-1]


def cost(upstream: str) -> float:
    price = PRICES[upstream]
    if "gpu_hour_usd" in price:
        each = price["gpu_hour_usd"] / 3600 / price["tokens_per_second"]
        return each * (PROMPT_TOKENS + COMPLETION_TOKENS)
    return (PROMPT_TOKENS * price["input_per_mtok"] + COMPLETION_TOKENS * price["output_per_mtok"]) / 1e6


def report(run: Run, rates: list[float], args: argparse.Namespace, capacity_rps: float) -> list[dict[str, Any]]:
    """One row per phase, printed and returned for the plot."""
    rows = []
    for phase, rate in enumerate(rates):
        done = [d for d in run.done if d.phase == phase]
        busy = [b for t, b in run.busy if phase * args.phase_s <= t < (phase + 1) * args.phase_s]
        served_self = sum(d.upstream == "qwen" for d in done)
        spills = sum(d.upstream == "api" for d in done)
        ideal_spills = max(0.0, rate - capacity_rps) * args.phase_s
        row = {"phase": phase, "rate": rate, "n": len(done), "self": served_self / max(1, len(done)),
               "ideal_self": min(1.0, capacity_rps / rate), "busy": statistics.fmean(busy) if busy else 0.0,
               "ideal_busy": min(1.0, rate / capacity_rps), "spills": spills, "ideal_spills": ideal_spills,
               "ttft_self": p95([d.ttft for d in done if d.upstream == "qwen"]),
               "ttft_api": p95([d.ttft for d in done if d.upstream == "api"]),
               "cost_k": 1000 * sum(cost(d.upstream) for d in done if d.upstream != "none") / max(1, len(done)),
               "ideal_cost_k": 1000 * (min(1.0, capacity_rps / rate) * cost("qwen")
                                       + max(0.0, 1 - capacity_rps / rate) * cost("api")),
               "failed": sum(d.upstream == "none" for d in done)}
        rows.append(row)
    print(f"\n{run.mode}: {'phase':>5} {'req/s':>6} {'reqs':>5} {'self %':>7} {'ideal':>6} {'busy %':>7} "
          f"{'ideal':>6} {'spills':>6} {'ideal':>6} {'p95 self s':>10} {'p95 api s':>9} {'$/1k':>8} {'ideal':>8}")
    for r in rows:
        print(f"{'':<{len(run.mode) + 1}} {r['phase']:>5} {r['rate']:>6.1f} {r['n']:>5} {100 * r['self']:>6.1f}% "
              f"{100 * r['ideal_self']:>5.0f}% {100 * r['busy']:>6.1f}% {100 * r['ideal_busy']:>5.0f}% "
              f"{r['spills']:>6} {r['ideal_spills']:>6.0f} {_s(r['ttft_self']):>10} {_s(r['ttft_api']):>9} "
              f"{r['cost_k']:>8.4f} {r['ideal_cost_k']:>8.4f}" + (f"  ({r['failed']} failed)" if r["failed"] else ""))
    return rows


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def plot(runs: list[Run], args: argparse.Namespace, rates: list[float], path: str) -> None:
    """Offered load, self-hosted share and spills per second, for each mode; skipped without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot written")
        return
    seconds = int(len(rates) * args.phase_s)
    figure, axes = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    for run in runs:
        per_s = [[d for d in run.done if int(d.sent) == s] for s in range(seconds)]
        axes[0].plot(range(seconds), [len(b) for b in per_s], label=f"offered ({run.mode})")
        axes[1].plot(range(seconds), [sum(d.upstream == "qwen" for d in b) / max(1, len(b)) for b in per_s],
                     label=run.mode)
        axes[2].plot(range(seconds), [sum(d.upstream == "api" for d in b) for b in per_s], label=run.mode)
    axes[0].set_ylabel("requests / s")
    axes[1].set_ylabel("share self-hosted")
    axes[2].set_ylabel("spilled / s")
    axes[2].set_xlabel("seconds")
    for axis in axes:
        axis.legend()
    figure.tight_layout()
    figure.savefig(path)
    print(f"plot written to {path}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--service-s", type=float, default=0.25)
    parser.add_argument("--max-waiting", type=int, default=4)
    parser.add_argument("--poll-ms", type=int, default=100)
    parser.add_argument("--phase-s", type=float, default=5.0)
    parser.add_argument("--ramp", default="0.5,1,2,3,1,0.5", help="multiples of the engine's capacity")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--plot", default="bench_spill.png")
    args = parser.parse_args()
    capacity_rps = args.slots / args.service_s
    rates = [float(x) * capacity_rps for x in args.ramp.split(",")]
    print(f"engine: {args.slots} slots x {args.service_s} s = {capacity_rps:.1f} requests/s; "
          f"max_waiting {args.max_waiting}, poll_ms {args.poll_ms}; phases of {args.phase_s} s at "
          + ", ".join(f"{r:.1f}" for r in rates) + " requests/s")
    with tempfile.TemporaryDirectory() as folder:
        runs = [await run_mode(mode, args, rates, Path(folder)) for mode in ("static", "capacity")]
    for run in runs:
        report(run, rates, args, capacity_rps)
    plot(runs, args, rates, args.plot)


if __name__ == "__main__":
    asyncio.run(main())
