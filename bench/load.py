"""The benchmark's load: plain chat completions at fixed concurrency (wrk, else aiohttp) and concurrent streams."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

PLAIN = {"model": "", "max_tokens": 32, "messages": [{"role": "user", "content": "Write one sentence about routing."}]}
STREAM = {"model": "", "stream": True, "stream_options": {"include_usage": True},
          "messages": [{"role": "user", "content": "Stream a short answer."}]}
UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


@dataclass
class Plain:
    """What a fixed-concurrency run of plain requests saw."""

    rps: float
    p50_ms: float | None
    p99_ms: float | None
    non2xx: int


@dataclass
class Streams:
    """What a run of concurrent streams saw."""

    ttft_s: list[float] = field(default_factory=list)
    frames: int = 0
    bad: int = 0


def percentile_ms(seconds: list[float], q: float) -> float | None:
    """The q-th quantile of a list of durations in seconds, in milliseconds (None when empty)."""
    ordered = sorted(seconds)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else None


def plain(url: str, model: str, key: str, connections: int, seconds: int, core: str, wrk: bool = True) -> Plain:
    """Plain requests from `connections` clients for `seconds`: wrk when installed (and wanted), else aiohttp."""
    body = {**PLAIN, "model": model}
    if wrk and shutil.which("wrk"):
        return _wrk(url, body, key, connections, seconds, core)
    return asyncio.run(_aiohttp_plain(url, body, key, connections, seconds))


def _wrk(url: str, body: dict[str, object], key: str, connections: int, seconds: int, core: str) -> Plain:
    script = (f'wrk.method = "POST"\nwrk.body = [[{json.dumps(body)}]]\n'
              f'wrk.headers["Content-Type"] = "application/json"\nwrk.headers["Authorization"] = "Bearer {key}"\n')
    with tempfile.TemporaryDirectory() as folder:
        lua = Path(folder) / "post.lua"
        lua.write_text(script)
        out = subprocess.run(["taskset", "-c", core, "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency",
                              "-s", str(lua), f"{url}/v1/chat/completions"],
                             capture_output=True, text=True, check=True).stdout
    found = re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)$", out, re.M)
    latency = {q: float(value) * UNITS_MS[unit] for q, value, unit in found}
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return Plain(float(rps.group(1)) if rps else 0.0, latency.get("50"), latency.get("99"),
                 int(non2xx.group(1)) if non2xx else 0)


async def _aiohttp_plain(url: str, body: dict[str, object], key: str, connections: int, seconds: int) -> Plain:
    """wrk's measurement with an aiohttp client: each connection sends its next request when the last is answered."""
    latencies: list[float] = []
    non2xx = 0
    end = time.perf_counter() + seconds
    headers = {"authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections)) as session:
        async def client() -> None:
            nonlocal non2xx
            while time.perf_counter() < end:
                start = time.perf_counter()
                async with session.post(f"{url}/v1/chat/completions", json=body, headers=headers) as response:
                    await response.read()
                    non2xx += response.status >= 300
                latencies.append(time.perf_counter() - start)

        began = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(connections)))
        elapsed = time.perf_counter() - began
    return Plain(len(latencies) / elapsed, percentile_ms(latencies, 0.5), percentile_ms(latencies, 0.99), non2xx)


def streams(url: str, model: str, key: str, clients: int, per_client: int) -> Streams:
    """`clients` concurrent clients, each reading `per_client` streams one after another."""
    return asyncio.run(_streams(url, {**STREAM, "model": model}, key, clients, per_client))


async def _streams(url: str, body: dict[str, object], key: str, clients: int, per_client: int) -> Streams:
    seen = Streams()
    headers = {"authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        async def client() -> None:
            for _ in range(per_client):
                start, first, data = time.perf_counter(), None, b""
                async with session.post(f"{url}/v1/chat/completions", json=body, headers=headers) as response:
                    async for chunk in response.content.iter_any():
                        data += chunk
                        if first is None and b"lorem" in data:
                            first = time.perf_counter() - start
                seen.frames += data.count(b"data: ")
                if response.status != 200 or not data.rstrip().endswith(b"data: [DONE]") or first is None:
                    seen.bad += 1
                else:
                    seen.ttft_s.append(first)

        await asyncio.gather(*(client() for _ in range(clients)))
    return seen
