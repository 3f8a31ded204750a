"""The policy schema's `capacity` block: defaults, and a place-naming problem for every field that is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import PolicyError
from gateway.routing.capacity.poller import metrics_url
from gateway.routing.policy.loader import load_policy
from gateway.routing.policy.model import Policy
from tests.conftest import KEY, key_hash

POLICY = f"""\
version: 1
upstreams:
  qwen-eu:
    base_url: http://vllm-qwen:8000/v1
    model: qwen
    hosting: self
    region: eu-west
    cost: {{gpu_hour_usd: 4.0, tokens_per_second: 2500}}
    capacity: {{CAPACITY}}
  gpt:
    base_url: https://api.example.com/v1
    model: gpt
    region: us
    cost: {{input_per_mtok: 2.5, output_per_mtok: 10}}
models:
  chat: {{candidates: [qwen-eu, gpt], objective: cost}}
tenants:
  acme: {{keys: ["{key_hash(KEY)}"]}}
"""


def load(tmp_path: Path, capacity: str) -> Policy:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY.replace("{CAPACITY}", capacity))
    return load_policy(path)


def problems(tmp_path: Path, capacity: str) -> list[str]:
    with pytest.raises(PolicyError) as caught:
        load(tmp_path, capacity)
    return [p.split(": ", 1)[1] for p in caught.value.problems]


def test_defaults_and_the_metrics_url_from_the_base_urls_origin(tmp_path: Path) -> None:
    spec = load(tmp_path, "{engine: vllm, max_waiting: 4}").doc.upstreams["qwen-eu"]
    assert spec.capacity is not None
    assert (spec.capacity.poll_ms, spec.capacity.stale_ms, spec.capacity.when_unknown) == (500, 3000, "open")
    assert metrics_url(spec) == "http://vllm-qwen:8000/metrics"


def test_an_explicit_metrics_url_wins(tmp_path: Path) -> None:
    spec = load(tmp_path, "{engine: sglang, max_kv_cache: 0.9, metrics_url: 'http://m:9/x'}").doc.upstreams["qwen-eu"]
    assert metrics_url(spec) == "http://m:9/x"


@pytest.mark.parametrize(("capacity", "expected"), [
    ("{engine: tgi, max_waiting: 4}", "upstreams.qwen-eu.capacity.engine: Input should be 'vllm', 'sglang' or"),
    ("{max_waiting: 4}", "upstreams.qwen-eu.capacity.engine: required key is missing"),
    ("{engine: vllm, max_waiting: -1}", "upstreams.qwen-eu.capacity.max_waiting: Input should be greater than or"),
    ("{engine: vllm, max_kv_cache: 1.5}", "upstreams.qwen-eu.capacity.max_kv_cache: Input should be less than or"),
    ("{engine: vllm, max_waiting: 4, poll_ms: 0}", "upstreams.qwen-eu.capacity.poll_ms: Input should be greater"),
    ("{engine: vllm, max_waiting: 4, stale_ms: 400}", "upstreams.qwen-eu.capacity.stale_ms: must be longer than"),
    ("{engine: vllm, max_waiting: 4, when_unknown: maybe}", "upstreams.qwen-eu.capacity.when_unknown: Input should"),
    ("{engine: vllm, max_waiting: 4, metrics_url: 'vllm:8000'}", "upstreams.qwen-eu.capacity.metrics_url: String"),
    ("{engine: vllm}", "upstreams.qwen-eu.capacity: give max_waiting, max_kv_cache or both"),
    ("{engine: llamacpp, max_waiting: 2, max_kv_cache: 0.9}", "upstreams.qwen-eu.capacity.max_kv_cache: llama.cpp"),
    ("{engine: vllm, max_waitng: 4}", "upstreams.qwen-eu.capacity.max_waitng: unknown key 'max_waitng' (did you "
                                      "mean 'max_waiting'?)"),
])
def test_every_field_is_checked_with_its_place(tmp_path: Path, capacity: str, expected: str) -> None:
    found = problems(tmp_path, capacity)
    assert any(p.startswith(expected) for p in found), found


def test_a_metrics_url_outside_capacity_says_it_needs_one(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    text = POLICY.replace("    capacity: {CAPACITY}\n", "    metrics_url: http://vllm-qwen:8000/metrics\n")
    path.write_text(text)
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert any("upstreams.qwen-eu.metrics_url: a metrics_url needs a capacity block" in p
               for p in caught.value.problems), caught.value.problems
