"""Time the Redis backend alone: concurrent admit+settle pairs, as the request path makes them.

    python scripts/bench_state.py [--url redis://127.0.0.1:6379/14] [--pairs 20000] [--concurrency 32]

Prints, per pair: this process's CPU, Redis's script time and the Redis commands the scripts ran (from
INFO commandstats), and Redis's CPU when its process is on this machine. The database is flushed first.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import time

import redis
import uvloop

from gateway.state.base import Charge, Limits
from gateway.state.redis import RedisBackend

LIMITS = Limits("bench", requests_per_minute=100_000_000, tokens_per_minute=1_000_000_000, tokens=60,
                budgets=(("day", 10**18),), cost=1234)


def redis_cpu_s() -> float | None:
    """CPU seconds of the local redis-server, if there is one."""
    found = subprocess.run(["pgrep", "-x", "redis-server"], capture_output=True, text=True).stdout.split()
    if not found:
        return None
    fields = open(f"/proc/{found[0]}/stat").read().split()  # noqa: SIM115
    return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")


async def pairs(backend: RedisBackend, count: int, concurrency: int) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with gate:
            now = time.time()
            admission = await backend.admit(LIMITS, f"bench-{i}", now)
            assert admission.ok, admission
            await asyncio.sleep(0)  # the upstream's turn
            await backend.settle(LIMITS, admission, Charge("mock", 1000, 50, 10), now)

    await asyncio.gather(*(one(i) for i in range(count)))
    await backend.flush()


async def main(url: str, count: int, concurrency: int) -> None:
    control = redis.Redis.from_url(url)
    control.flushdb()
    backend = RedisBackend(url)
    await pairs(backend, 500, concurrency)  # connect, load the scripts, warm up
    control.config_resetstat()
    cpu, redis_before = time.process_time(), redis_cpu_s()
    await pairs(backend, count, concurrency)
    cpu, redis_after = time.process_time() - cpu, redis_cpu_s()
    await backend.close()
    stats = control.info("commandstats")
    script = stats.get("cmdstat_evalsha", {}).get("usec", 0)
    commands = sum(v["calls"] for k, v in stats.items() if k not in ("cmdstat_evalsha", "cmdstat_config|resetstat"))
    print(f"per pair: gateway CPU {cpu / count * 1e6:.1f} us, Redis scripts {script / count:.1f} us, "
          f"Redis commands {commands / count:.1f}", end="")
    if redis_before is not None and redis_after is not None:
        print(f", Redis CPU {(redis_after - redis_before) / count * 1e6:.1f} us", end="")
    print()
    control.flushdb()
    control.close()


if __name__ == "__main__":
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument("--url", default="redis://127.0.0.1:6379/14")
    options.add_argument("--pairs", type=int, default=20_000)
    options.add_argument("--concurrency", type=int, default=32)
    args = options.parse_args()
    uvloop.run(main(args.url, args.pairs, args.concurrency))
