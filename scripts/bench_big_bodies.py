"""Time /healthz while clients send 10 MiB chat bodies to a running gateway (issue 11: the probe must not stall).

    python scripts/bench_big_bodies.py --url http://127.0.0.1:9400 --key sk-bench --model bench-model

Each attacker posts bodies of one kind back to back; a probe asks for /healthz every 20 ms meanwhile. Prints, per
kind, the probe's latency (p50, p99, worst) and how long each big request took. The gateway must route MODEL to an
upstream that answers (bench/policy-detectors.yaml with the bench mock reads every body with every detector).
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import httpx
import orjson

MIB = 1024 * 1024
PROSE = "the quarterly review covers reliability, cost and hiring in plain words. "
KINDS = {
    "prose": PROSE,
    "card-like '4111 '": "4111 ",
    "mixed foldable characters": "".join(map(chr, range(0x660, 0x66A))) + "\u200b\u00ad\u2013\u2014\u3000",
    "emoji": "hi \U0001f600 ",
    "'\\u0041' escapes": "\\u0041",
}
PROBE_EVERY_S = 0.02


def body(model: str, unit: str) -> bytes:
    """A chat request whose one message fills the body to just under 10 MiB."""
    content = unit * ((10 * MIB - 64 * 1024) // (len(orjson.dumps(unit)) - 2))  # as sent: escapes count double
    return orjson.dumps({"model": model, "max_tokens": 5, "messages": [{"role": "user", "content": content}]})


def attack(url: str, key: str, raw: bytes, rounds: int, took: list[float]) -> None:
    """Post raw rounds times, noting how long each took."""
    with httpx.Client(timeout=120) as client:
        for _ in range(rounds):
            started = time.perf_counter()
            answer = client.post(url + "/v1/chat/completions", content=raw,
                                 headers={"authorization": f"Bearer {key}", "content-type": "application/json"})
            answer.raise_for_status()
            took.append(time.perf_counter() - started)


def probe(url: str, stop: threading.Event, latencies: list[float]) -> None:
    """Ask for /healthz every PROBE_EVERY_S until stop is set, noting each answer's latency."""
    with httpx.Client(timeout=60) as client:
        while not stop.is_set():
            started = time.perf_counter()
            client.get(url + "/healthz").raise_for_status()
            latencies.append(time.perf_counter() - started)
            stop.wait(PROBE_EVERY_S)


def run(args: argparse.Namespace, label: str, unit: str) -> None:
    """One kind of body: attackers and the probe together, then a line of figures."""
    raw, stop = body(args.model, unit), threading.Event()
    took: list[float] = []
    latencies: list[float] = []
    attackers = [threading.Thread(target=attack, args=(args.url, args.key, raw, args.rounds, took))
                 for _ in range(args.attackers)]
    prober = threading.Thread(target=probe, args=(args.url, stop, latencies))
    prober.start()
    for thread in attackers:
        thread.start()
    for thread in attackers:
        thread.join()
    stop.set()
    prober.join()
    cuts = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) > 1 else latencies * 99
    print(f"  {label:28} probes {len(latencies):4}  /healthz p50 {cuts[49] * 1000:6.1f} ms  p99 "
          f"{cuts[98] * 1000:6.1f} ms  worst {max(latencies) * 1000:6.1f} ms  big request p50 "
          f"{statistics.median(took) * 1000:6.0f} ms", flush=True)


def main() -> None:
    """Print one line per kind of body."""
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument("--url", default="http://127.0.0.1:9400")
    options.add_argument("--key", default="sk-bench")
    options.add_argument("--model", default="bench-model")
    options.add_argument("--attackers", type=int, default=2)
    options.add_argument("--rounds", type=int, default=3, help="bodies each attacker sends")
    args = options.parse_args()
    print(f"{args.attackers} clients each sending {args.rounds} bodies of 10 MiB; /healthz every "
          f"{PROBE_EVERY_S * 1000:.0f} ms meanwhile")
    for label, unit in KINDS.items():
        run(args, label, unit)


if __name__ == "__main__":
    main()
