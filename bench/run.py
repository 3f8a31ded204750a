"""Measure the gateway against the mock upstream and the floor proxy, under the same load, on pinned cores.

    python bench/run.py [--policy bench/policy.yaml] [--seconds 8] [--json FILE]
    python bench/run.py --gateway-cmd 'switchyard serve --policy bench/policy-limits.yaml --port 9400 --redis URL'

The mock upstream runs on core 0 with the load (wrk for plain requests when installed, else an aiohttp
client; an aiohttp client for streams). The floor proxy, then the gateway, each run alone on core 1 and
get the same load: plain requests from 1 and from 32 connections, then 50 clients each reading streams of
100 content events. It prints one table with the gateway/floor ratio of every figure: quote ratios, not
absolute times (the floor itself moves 15-30% between runs on a shared machine; the ratios much less).
The policy must send MODEL to http://127.0.0.1:9100/v1 and accept the key (bench/policy*.yaml do).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import load

HERE = Path(__file__).resolve().parent
CORE_LOAD, CORE_SUT = "0", "1"
MOCK_PORT, FLOOR_PORT, GATEWAY_PORT = 9100, 9300, 9400
BENCH_KEY = "sk-bench"  # bench/policy*.yaml hold its hash


@dataclass
class Result:
    """One system's figures."""

    name: str
    c1: load.Plain
    c32: load.Plain
    streams: load.Streams
    cpu_ms_per_req: float | None = None
    cpu_us_per_frame: float | None = None
    rss_mb: float | None = None


def start(argv: list[str], core: str, log: Path) -> subprocess.Popen[bytes]:
    """argv pinned to one core, in a session of its own, its output appended to log."""
    with log.open("ab") as out:
        return subprocess.Popen(["taskset", "-c", core, *argv], stdout=subprocess.DEVNULL, stderr=out,
                                start_new_session=True)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to its process group (workers included), SIGKILL after 15 s."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def wait_until(ready: Callable[[], bool], process: subprocess.Popen[bytes], what: str, timeout: float = 60) -> None:
    """Poll ready until it holds; exit naming what did not start (and the log) if it dies or the deadline passes."""
    deadline = time.monotonic() + timeout
    while not ready():
        if process.poll() is not None or time.monotonic() > deadline:
            sys.exit(f"bench: {what} did not start; see {log_path()}")
        time.sleep(0.05)


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def answers_ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def process_tree(root: int) -> list[int]:
    """root and every process below it (uvicorn's workers)."""
    found, frontier = [root], [root]
    while frontier:
        pid = frontier.pop()
        try:
            children = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        except OSError:
            children = []
        found += children
        frontier += children
    return found


def cpu_seconds(root: int) -> float:
    """CPU time of the whole tree, from each thread's schedstat (ns; /proc/PID/stat counts only 10 ms ticks)."""
    total = 0
    for pid in process_tree(root):
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                total += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
        except OSError:
            continue
    return total / 1e9


def rss_mb(root: int) -> float:
    """Resident memory of the whole tree."""
    total_kb = 0
    for pid in process_tree(root):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        total_kb += next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
    return total_kb / 1024


def measure(name: str, url: str, pid: int | None, args: argparse.Namespace) -> Result:
    """The same load on one system; CPU and memory too when it is a process of ours (pid)."""
    print(f"-- {name}", file=sys.stderr)
    c1 = load.plain(url, args.model, args.api_key, 1, args.seconds, CORE_LOAD, not args.no_wrk)
    cpu, began = cpu_seconds(pid) if pid else 0.0, time.monotonic()
    c32 = load.plain(url, args.model, args.api_key, 32, args.seconds, CORE_LOAD, not args.no_wrk)
    requests = c32.rps * (time.monotonic() - began)
    cpu_ms_per_req = (cpu_seconds(pid) - cpu) * 1000 / max(1.0, requests) if pid else None
    cpu = cpu_seconds(pid) if pid else 0.0
    streams = load.streams(url, args.model, args.api_key, args.streams, max(5, 2 * args.seconds))
    if not pid:
        return Result(name, c1, c32, streams)
    cpu_us_per_frame = (cpu_seconds(pid) - cpu) * 1e6 / max(1, streams.frames)
    return Result(name, c1, c32, streams, cpu_ms_per_req, cpu_us_per_frame, rss_mb(pid))


def table(results: list[Result], streams: int) -> list[str]:
    """The figures of each system side by side, with gateway/floor when both were measured."""
    rows: list[tuple[str, list[float | int | None]]] = [
        ("plain c=1 p50 ms", [r.c1.p50_ms for r in results]), ("plain c=1 p99 ms", [r.c1.p99_ms for r in results]),
        ("plain c=32 req/s", [r.c32.rps for r in results]), ("plain c=32 p99 ms", [r.c32.p99_ms for r in results]),
        ("plain c=32 CPU ms/req", [r.cpu_ms_per_req for r in results]),
        ("non-2xx", [r.c1.non2xx + r.c32.non2xx for r in results]),
        (f"stream x{streams} TTFT p50 ms", [load.percentile_ms(r.streams.ttft_s, 0.5) for r in results]),
        (f"stream x{streams} TTFT p99 ms", [load.percentile_ms(r.streams.ttft_s, 0.99) for r in results]),
        ("stream CPU us/frame", [r.cpu_us_per_frame for r in results]),
        ("stream bad", [r.streams.bad for r in results]), ("RSS MB", [r.rss_mb for r in results])]
    names = [r.name for r in results]
    ratio = "floor" in names and "gateway" in names
    lines = [f"{'figure':28}" + "".join(f"{n:>12}" for n in names) + ("   gateway/floor" if ratio else "")]
    for label, values in rows:
        line = f"{label:28}" + "".join(f"{'-' if v is None else v:>12}" if not isinstance(v, float) else f"{v:12.3f}"
                                       for v in values)
        floor, gateway = (values[names.index(n)] if n in names else None for n in ("floor", "gateway"))
        if ratio and isinstance(floor, (int, float)) and isinstance(gateway, (int, float)) and floor:
            line += f"   {gateway / floor:.2f}"
        lines.append(line)
    return lines


def log_path() -> Path:
    return Path(tempfile.gettempdir()) / "switchyard-bench.log"


def run(args: argparse.Namespace) -> list[Result]:
    """Start the mock, measure it directly, then the floor, then the gateway; stop everything, whatever happens."""
    python, log = sys.executable, log_path()
    mock = start([python, str(HERE / "servers.py"), "mock", "--port", str(MOCK_PORT), "--chunks", str(args.chunks)],
                 CORE_LOAD, log)
    results: list[Result] = []
    try:
        wait_until(lambda: listening(MOCK_PORT), mock, "the mock upstream")
        results.append(measure("direct", f"http://127.0.0.1:{MOCK_PORT}", None, args))
        if not args.skip_floor:
            floor = start([python, str(HERE / "servers.py"), "floor", "--port", str(FLOOR_PORT),
                           "--upstream", f"http://127.0.0.1:{MOCK_PORT}"], CORE_SUT, log)
            try:
                wait_until(lambda: listening(FLOOR_PORT), floor, "the floor proxy")
                results.append(measure("floor", f"http://127.0.0.1:{FLOOR_PORT}", floor.pid, args))
            finally:
                stop(floor)
        gateway = start(shlex.split(args.gateway_cmd), CORE_SUT, log)
        try:
            url = args.gateway_url.rstrip("/")
            wait_until(lambda: answers_ready(url), gateway, "the gateway", timeout=120)
            results.append(measure("gateway", url, gateway.pid, args))
        finally:
            stop(gateway)
    finally:
        stop(mock)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", default="bench/policy.yaml", help="the gateway's policy (default: %(default)s)")
    parser.add_argument("--gateway-cmd", help="how to start the gateway instead (it must serve --gateway-url)")
    parser.add_argument("--gateway-url", default=f"http://127.0.0.1:{GATEWAY_PORT}")
    parser.add_argument("--model", default="bench-model")
    parser.add_argument("--api-key", default=BENCH_KEY)
    parser.add_argument("--seconds", type=int, default=8, help="length of each plain run (default: %(default)s)")
    parser.add_argument("--streams", type=int, default=50, help="concurrent streaming clients (default: %(default)s)")
    parser.add_argument("--chunks", type=int, default=100, help="content events per stream (default: %(default)s)")
    parser.add_argument("--skip-floor", action="store_true")
    parser.add_argument("--no-wrk", action="store_true", help="load plain requests with aiohttp even if wrk is here")
    parser.add_argument("--json", metavar="FILE", help="also write every figure to FILE")
    args = parser.parse_args()
    args.gateway_cmd = args.gateway_cmd or shlex.join([sys.executable, "-m", "gateway.tools.cli", "serve", "--policy",
                                                       args.policy, "--port", str(GATEWAY_PORT), "--log-level",
                                                       "warning"])
    if (os.cpu_count() or 1) < 2:
        sys.exit("bench: needs two cores (one for the load and the mock, one for the system measured)")
    taken = [port for port in (MOCK_PORT, FLOOR_PORT, GATEWAY_PORT) if listening(port)]
    if taken:
        sys.exit(f"bench: port(s) {', '.join(map(str, taken))} already in use on 127.0.0.1")
    os.sched_setaffinity(0, {int(CORE_LOAD)})  # the stream clients run in this process, beside the mock
    results = run(args)
    print("\n".join(table(results, args.streams)))
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in results], indent=1))


if __name__ == "__main__":
    main()
