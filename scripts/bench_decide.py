"""Time classification plus decide() for a large policy and a 4 KB prompt; print p50/p99 in microseconds.

The policy has 50 upstreams, 20 routes, 100 tenants, 10 rules and every built-in detector; the prompt is
4 KB of prose with no personal data, so every detector reads all of it.
"""

from __future__ import annotations

import gc
import hashlib
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from gateway.routing import classify
from gateway.routing.policy.decide import Live, decide
from gateway.routing.policy.loader import load_policy

ROUNDS = 20_000
REGIONS = ["eu-west", "eu-central", "us", "ap"]
PROSE = ("The platform team met to review reliability, cost and the upgrade plan for the next quarter. Availability "
         "was slightly below target after two incidents; the team proposes automated renewals and a second region. "
         "Cloud spend ran over budget, mostly from evaluation jobs, and finance asked about spot capacity. ")


def large_policy() -> dict[str, Any]:
    """The policy shape issue 3 sets for this measurement."""
    upstreams = {f"u{i}": {"base_url": f"http://10.0.0.{i}:8000/v1", "model": f"m{i}", "region": REGIONS[i % 4],
                           "hosting": "self" if i % 3 == 0 else "third_party", "context_window": 32768 * (1 + i % 4),
                           "capabilities": ["tools", "json"],
                           "cost": {"input_per_mtok": 0.1 * (i + 1), "output_per_mtok": 0.3 * (i + 1)}}
                 for i in range(50)}
    models = {f"r{j}": {"candidates": [f"u{(j + k) % 50}" for k in range(8)],
                        "objective": ["cost", "latency", "priority"][j % 3]} for j in range(20)}
    tenants = {f"t{k}": {"keys": ["sha256:" + hashlib.sha256(f"k{k}".encode()).hexdigest()],
                         "data_class": "internal" if k % 2 else "public",
                         "regions": REGIONS[:3] if k % 5 else None} for k in range(100)}
    rules = [{"name": f"rule{n}", "match": {"header": {"x-team": f"team{n}"}}, "prefer": [f"u{n}"]} for n in range(9)]
    rules.append({"name": "long", "match": {"prompt_tokens_over": 30000}, "objective": "cost"})
    return {"version": 1, "upstreams": upstreams, "models": models, "tenants": tenants, "rules": rules,
            "data_classes": {"public": {}, "internal": {"regions": REGIONS[:3]},
                             "personal": {"hosting": ["self"], "regions": ["eu-west"]}},
            "classify": {"detectors": [{"detect": ["email", "phone", "credit_card", "iban", "national_id"],
                                        "class": "personal"}]}}


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "policy.yaml"
        path.write_text(yaml.safe_dump(large_policy()))
        policy = load_policy(path, {})
    prompt = (PROSE * 20)[:4096]
    body = {"model": "r7", "max_tokens": 256, "messages": [{"role": "system", "content": "Be brief."},
                                                           {"role": "user", "content": prompt}]}
    headers = {"x-team": "team8", "content-type": "application/json"}
    live = Live(ttft_p95_ms={f"u{i}": 100.0 + i for i in range(0, 50, 2)})
    samples = []
    gc.disable()
    for _ in range(ROUNDS):
        started = time.perf_counter_ns()
        features = classify.features(policy, "t13", "chat", body, headers)
        decide(policy, features, live)
        samples.append((time.perf_counter_ns() - started) / 1000)
    gc.enable()
    samples.sort()
    p50, p99 = statistics.median(samples), samples[int(0.99 * len(samples))]
    decision = decide(policy, classify.features(policy, "t13", "chat", body, headers), live)
    print(f"classify + decide, 50 upstreams / 20 routes / 100 tenants / 10 rules, 4 KB prompt: "
          f"p50 {p50:.1f} us, p99 {p99:.1f} us  (decision: {', '.join(decision.candidates)}; rule {decision.rule})")
    sys.exit(0)


if __name__ == "__main__":
    main()
