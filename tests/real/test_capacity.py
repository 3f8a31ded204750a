"""Capacity-aware routing against a real vLLM with two sequences at a time: a burst fills it, the rest spills."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
import yaml

from gateway.tools.standin import StandIn
from tests.conftest import KEY, Loop, key_hash, wait_for
from tests.real import servers
from tests.real.conftest import GENERATE

pytestmark = pytest.mark.real
LONG = {"max_tokens": 400, "extra_body": {"ignore_eos": True}}  # about a second of decoding each on the tiny model


@pytest.fixture(scope="module")
def narrow(logs: Path) -> Iterator[servers.Process]:
    """A vLLM generate server of its own that runs two sequences at once (the rest wait)."""
    process = servers.vllm(servers.build(), "vllm-narrow", GENERATE, logs, "--max-num-seqs", "2")
    try:
        process.start()
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def api() -> Iterator[str]:
    loop = Loop()
    try:
        yield loop.serve(StandIn("api")).url
    finally:
        loop.close()


@pytest.fixture(scope="module")
def spill_gateway(narrow: servers.Process, api: str, logs: Path) -> Iterator[servers.Process]:
    doc = {
        "version": 1,
        "upstreams": {
            "vllm": {"base_url": narrow.url + "/v1", "model": GENERATE, "hosting": "self", "region": "eu-west",
                     "cost": {"gpu_hour_usd": 1.0, "tokens_per_second": 1000},
                     "capacity": {"engine": "vllm", "max_waiting": 1, "poll_ms": 100, "stale_ms": 2000}},
            "api": {"base_url": api + "/v1", "model": "api-model", "region": "us",
                    "cost": {"input_per_mtok": 3.0, "output_per_mtok": 15.0}},
        },
        "models": {"chat": {"candidates": ["api", "vllm"], "objective": "cost"}},
        "data_classes": {"public": {}, "personal": {"hosting": ["self"]}},
        "tenants": {"acme": {"keys": [key_hash(KEY)]}},
        "resilience": {"ttft_timeout_s": 60, "per_try_timeout_s": 120, "deadline_s": 180},
    }
    path = logs / "capacity-policy.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    process = servers.gateway(path, logs)
    try:
        process.start(deadline_s=30)
        yield process
    finally:
        process.stop()


def _stream(client: openai.OpenAI, personal: bool,
            decided: threading.Semaphore | None = None) -> tuple[str, str | None]:
    """Stream one long completion; release `decided` once its headers (so its route) are known."""
    headers = {"x-switchyard-data-class": "personal"} if personal else {}
    raw = client.chat.completions.with_raw_response.create(
        model="chat", messages=[{"role": "user", "content": "Tell a long story."}], stream=True,
        extra_headers=headers, **LONG)  # type: ignore[arg-type]
    if decided is not None:
        decided.release()
    chunks = list(raw.parse())
    assert chunks
    return raw.headers["x-switchyard-upstream"], raw.headers.get("x-switchyard-spilled-from")


def _gateway_metric(gateway: servers.Process, line: str) -> bool:
    return line in httpx.get(gateway.url + "/metrics", timeout=5).text


def test_a_burst_fills_real_vllm_spills_the_rest_and_comes_back(spill_gateway: servers.Process) -> None:
    wait_for(lambda: _gateway_metric(spill_gateway, 'switchyard_upstream_load{signal="waiting",upstream="vllm"}'),
             timeout=30, what="a first reading of vLLM's metrics")
    with openai.OpenAI(base_url=spill_gateway.url + "/v1", api_key=KEY, max_retries=0, timeout=120) as client, \
            ThreadPoolExecutor(16) as pool:
        decided = threading.Semaphore(0)
        burst = [pool.submit(_stream, client, False, decided) for _ in range(12)]
        for _ in burst:  # the personal ones come once the burst is placed, so they cannot take vLLM's room first
            assert decided.acquire(timeout=120)
        personal = [pool.submit(_stream, client, True) for _ in range(3)]
        served = [f.result(timeout=120) for f in burst]
        bound = [f.result(timeout=120) for f in personal]
    assert sum(upstream == "vllm" for upstream, _ in served) >= 2  # vLLM took what it could
    spilled = [(u, s) for u, s in served if u == "api"]
    assert spilled, served  # 12 at once cannot all fit two sequences and one waiting
    assert all(s == "vllm" for _, s in spilled)
    assert bound == [("vllm", None)] * 3  # personal data may only go to vLLM: it queued there
    wait_for(lambda: _gateway_metric(spill_gateway, 'switchyard_upstream_full{upstream="vllm"} 0.0')
             and _gateway_metric(spill_gateway, 'switchyard_upstream_load{signal="running",upstream="vllm"} 0.0'),
             timeout=30, what="vLLM to drain")
    with openai.OpenAI(base_url=spill_gateway.url + "/v1", api_key=KEY, max_retries=0, timeout=120) as client:
        assert _stream(client, False) == ("vllm", None)
    assert _gateway_metric(spill_gateway, 'switchyard_spills_total{from="vllm",route="chat",to="api"}')
