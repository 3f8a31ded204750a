"""Measure translated (litellm) upstreams against the fake Anthropic server; print a table, optionally JSON.

  python scripts/bench_translated.py [--part adapter|gateway|startup|all] [--streams 50] [--rounds 10]
                                     [--chunks 100] [--json FILE]

adapter  LitellmUpstream alone, in this process: CPU per frame (time.process_time over every thread) for
         streams of --chunks text deltas and for one-delta streams (what a request costs however short),
         through our event translation and, for comparison, through litellm's own stream wrapper.
gateway  `switchyard serve` on core 1 in front of the fake (core 0), driven like gatebench: --streams
         concurrent streaming clients; the gateway's CPU per frame the client receives, and its RSS.
startup  `switchyard serve` with an openai-only policy and with an anthropic upstream: seconds until
         /readyz answers, and RSS then.

The fake runs in its own process, so its CPU is not counted. Quote ratios and orders of magnitude: the
machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import yaml

ROOT = Path(__file__).resolve().parents[1]
KEY = "sk-sy-bench-0123456789abcdef0123456789abcdef"
FAKE = """
import sys, uvicorn
from gateway.tools.standin import FakeAnthropic
uvicorn.run(FakeAnthropic("anthropic", words=int(sys.argv[2])), host="127.0.0.1", port=int(sys.argv[1]),
            log_level="warning", loop="uvloop", http="httptools")
"""
HI = [{"role": "user", "content": "Stream a short answer."}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise RuntimeError(f"nothing listens on {port}")


def pinned(core: str) -> list[str]:
    """taskset for one core, when there are two and taskset is installed."""
    return ["taskset", "-c", core] if (os.cpu_count() or 1) > 1 and shutil.which("taskset") else []


@contextlib.contextmanager
def process(args: list[str], port: int | None = None) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(args, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        if port is not None:
            wait_port(port)
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@contextlib.contextmanager
def fake(chunks: int) -> Iterator[str]:
    port = free_port()
    with process([*pinned("0"), sys.executable, "-c", FAKE, str(port), str(chunks)], port):
        yield f"http://127.0.0.1:{port}"


# -- the adapter on its own ----------------------------------------------------------------------------------


async def adapter_run(url: str, streams: int, rounds: int, wrapper: bool) -> tuple[int, float]:
    """Frames received and process CPU seconds for streams x rounds streams through LitellmUpstream."""
    from pydantic import SecretStr

    from gateway.upstreams.litellm_adapter import LitellmUpstream
    from gateway.upstreams.spec import UpstreamSpec

    spec = UpstreamSpec(kind="anthropic", model="claude-sonnet-4-5", base_url=url, api_key=SecretStr("test"))
    upstream = LitellmUpstream("anthropic", spec)
    if wrapper:
        upstream._frames = lambda source, include_usage: None  # type: ignore[method-assign]
    body = upstream.encode({"model": "bench", "messages": HI}, True)

    async def one() -> int:
        exchange = await upstream.send("/chat/completions", body, {}, True)
        frames = 0
        async for chunk in exchange.chunks():
            frames += chunk.count(b"data: ")
        exchange.close()
        return frames

    async def worker() -> int:
        return sum([await one() for _ in range(rounds)])

    await asyncio.gather(*(one() for _ in range(min(streams, 8))))  # warm up: lazy imports, connections
    cpu = time.process_time()
    frames = sum(await asyncio.gather(*(worker() for _ in range(streams))))
    spent = time.process_time() - cpu
    await upstream.aclose()
    return frames, spent


def bench_adapter(args: argparse.Namespace) -> dict[str, Any]:
    import uvloop

    results: dict[str, Any] = {}
    for wrapper in (False, True):
        rounds = max(1, args.rounds // (4 if wrapper else 1))  # the wrapper is slow: fewer streams suffice
        count = args.streams * rounds
        with fake(args.chunks) as long_url, fake(1) as short_url:
            frames, cpu = uvloop.run(adapter_run(long_url, args.streams, rounds, wrapper))
            short_frames, short_cpu = uvloop.run(adapter_run(short_url, args.streams, rounds, wrapper))
        results["litellm's stream wrapper" if wrapper else "our event translation"] = {
            "frames_per_stream": round(frames / count, 1),
            "cpu_us_per_frame": round(cpu / frames * 1e6, 1),
            "cpu_ms_per_one_delta_stream": round(short_cpu / count * 1e3, 2),
            "cpu_us_per_added_frame": round((cpu - short_cpu) / (frames - short_frames) * 1e6, 1)}
    return results


# -- the gateway, gatebench-style ----------------------------------------------------------------------------


def policy(folder: Path, upstreams: dict[str, dict[str, Any]]) -> Path:
    doc = {"version": 1, "upstreams": upstreams, "models": {"bench": {"candidates": list(upstreams)}},
           "tenants": {"bench": {"keys": ["sha256:" + hashlib.sha256(KEY.encode()).hexdigest()]}}}
    path = folder / "policy.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def anthropic_upstream(url: str) -> dict[str, Any]:
    return {"kind": "anthropic", "model": "claude-sonnet-4-5", "base_url": url, "api_key": "test"}


def openai_upstream(url: str) -> dict[str, Any]:
    return {"base_url": url + "/v1", "model": "m", "cost": {"input_per_mtok": 1, "output_per_mtok": 2}}


@contextlib.contextmanager
def serve(policy_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = free_port()
    args = [*pinned("1"), sys.executable, "-m", "gateway.tools.cli", "serve", "--policy", str(policy_path),
            "--port", str(port), "--log-level", "warning", "--reload-interval-s", "0"]
    with process(args, port) as proc:
        yield proc, f"http://127.0.0.1:{port}"


def tree_cpu_seconds(root: int) -> float:
    """CPU of a process and its children, from schedstat (nanoseconds)."""
    total, frontier = 0, [root]
    while frontier:
        pid = frontier.pop()
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
                with open(f"/proc/{pid}/task/{tid}/children") as f:
                    frontier += [int(x) for x in f.read().split()]
    return total / 1e9


def rss_mb(root: int) -> float:
    with open(f"/proc/{root}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def drive(url: str, streams: int, per_worker: int) -> tuple[int, int]:
    """Frames received and streams that did not end in [DONE]."""
    body = {"model": "bench", "stream": True, "stream_options": {"include_usage": True}, "messages": HI}
    headers = {"authorization": f"Bearer {KEY}"}
    frames = bad = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        async def worker() -> None:
            nonlocal frames, bad
            for _ in range(per_worker):
                async with session.post(url + "/v1/chat/completions", json=body, headers=headers) as response:
                    data = await response.read()
                frames += data.count(b"data: ")
                bad += not data.rstrip().endswith(b"[DONE]")
        await asyncio.gather(*(worker() for _ in range(streams)))
    return frames, bad


def bench_gateway(args: argparse.Namespace) -> dict[str, Any]:
    with fake(args.chunks) as url, tempfile.TemporaryDirectory() as folder, \
            serve(policy(Path(folder), {"anthropic": anthropic_upstream(url)})) as (proc, gateway):
        asyncio.run(drive(gateway, 4, 2))  # warm up
        cpu = tree_cpu_seconds(proc.pid)
        frames, bad = asyncio.run(drive(gateway, args.streams, args.rounds))
        cpu = tree_cpu_seconds(proc.pid) - cpu
        return {"frames": frames, "bad_streams": bad, "cpu_us_per_frame": round(cpu / max(1, frames) * 1e6, 1),
                "rss_mb": round(rss_mb(proc.pid), 1)}


# -- start-up ------------------------------------------------------------------------------------------------


def ready_after(policy_path: Path) -> tuple[float, float]:
    started = time.monotonic()
    with serve(policy_path) as (proc, gateway):
        while True:
            port = int(gateway.rsplit(":")[-1])
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)) as s:
                s.sendall(b"GET /readyz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return time.monotonic() - started, rss_mb(proc.pid)
            time.sleep(0.01)


def bench_startup(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, upstreams in (("openai only", {"self": openai_upstream("http://127.0.0.1:9")}),
                                ("with an anthropic upstream", {"self": openai_upstream("http://127.0.0.1:9"),
                                                                "anthropic": anthropic_upstream("http://127.0.0.1:9")})):
            runs = [ready_after(policy(Path(folder), upstreams)) for _ in range(3)]
            results[name] = {"ready_s": round(statistics.median(r[0] for r in runs), 2),
                             "rss_mb": round(statistics.median(r[1] for r in runs), 1)}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", default="all", choices=["adapter", "gateway", "startup", "all"])
    parser.add_argument("--streams", type=int, default=50, help="concurrent streams")
    parser.add_argument("--rounds", type=int, default=10, help="streams each concurrent client runs")
    parser.add_argument("--chunks", type=int, default=100, help="text deltas per stream")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    for part, run in (("adapter", bench_adapter), ("gateway", bench_gateway), ("startup", bench_startup)):
        if args.part in (part, "all"):
            print(f"-- {part}", file=sys.stderr)
            results[part] = run(args)
            print(json.dumps({part: results[part]}, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
