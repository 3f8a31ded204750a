"""Fixtures of the real-upstream suite: real vLLM servers (generate and pooling) and `switchyard serve` before them.

Run it with `python -m pytest -m real tests/real` (the main suite deselects the `real` marker). The first run
builds vLLM's venv and the test model into ${SWITCHYARD_CACHE:-~/.cache/switchyard} (scripts/real/setup-vllm);
later runs reuse them. Every server is bound to 127.0.0.1 and stopped at the end of the session.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from gateway.tools.standin import StandIn
from tests.conftest import KEY, Loop, key_hash
from tests.real import servers

GENERATE = "tiny"  # the names vLLM serves the model under
EMBED = "tiny-embed"
MAX_LOGPROBS = 100  # vLLM allows 20 by default; more make a stream heavy enough to catch mid-way
KILLS_VLLM = "doomed_vllm"  # tests using this fixture kill the generate server: they run last


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Move the tests that kill vLLM to the end of the session (the sort keeps every other test's order)."""
    items.sort(key=lambda item: KILLS_VLLM in getattr(item, "fixturenames", ()))


@dataclass
class Vllm:
    """The two vLLM servers of the session."""

    generate: servers.Process
    pooling: servers.Process
    version: str


@pytest.fixture(scope="session")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("real-logs")


@pytest.fixture(scope="session")
def vllm(logs: Path) -> Iterator[Vllm]:
    """vLLM's generate and pooling servers, started together (each takes ~2.4 GB and 45-70 s)."""
    built = servers.build()
    generate = servers.vllm(built, "vllm-generate", GENERATE, logs, "--max-logprobs", str(MAX_LOGPROBS))
    pooling = servers.vllm(built, "vllm-pooling", EMBED, logs, "--runner", "pooling", "--convert", "embed")
    try:
        generate.launch()  # both at once: the two starts overlap
        pooling.launch()
        generate.wait_healthy()
        pooling.wait_healthy()
        yield Vllm(generate, pooling, built.version())
    finally:
        generate.stop()
        pooling.stop()


@dataclass
class Wide:
    """A stand-in upstream with a large window that declares continuation: what vLLM falls back to."""

    app: StandIn
    url: str


@pytest.fixture(scope="session")
def standin() -> Iterator[Wide]:
    loop = Loop()
    app = StandIn("wide")
    try:
        yield Wide(app, loop.serve(app).url)
    finally:
        loop.close()


def policy(vllm: Vllm, standin: Wide) -> dict[str, Any]:
    """Routes over the real servers: windows declared or not, a short idle timeout, fallbacks."""
    def upstream(url: str, model: str, **extra: Any) -> dict[str, Any]:
        return {"base_url": url + "/v1", "model": model, "region": "eu-west", "hosting": "self",
                "cost": {"input_per_mtok": 0.1, "output_per_mtok": 0.2}, **extra}

    generate, pooling = vllm.generate.url, vllm.pooling.url
    # Short only between events: a first event of a heavy request on a cold CPU engine has taken over 30 s.
    short = {"attempts_per_upstream": 1, "backoff_ms": [1, 5], "ttft_timeout_s": 100, "per_try_timeout_s": 100,
             "stream_idle_timeout_s": 2, "deadline_s": 120}
    return {
        "version": 1,
        "upstreams": {
            "vllm": upstream(generate, GENERATE, context_window=512, capabilities=["tools", "json", "responses"]),
            "vllm-open": upstream(generate, GENERATE, capabilities=["tools", "json", "responses"]),
            "vllm-cont": upstream(generate, GENERATE, capabilities=["continuation"]),
            "vllm-embed": upstream(pooling, EMBED, context_window=512),
            "vllm-embed-open": upstream(pooling, EMBED),
            "wide": upstream(standin.url, "wide-model", context_window=8192, capabilities=["continuation"]),
        },
        "models": {
            "chat": {"candidates": ["vllm"], "default_max_tokens": 64},
            "chat-open": {"candidates": ["vllm-open"]},
            "chat-wide": {"candidates": ["vllm-open", "wide"]},
            "chat-stall": {"candidates": ["vllm"], "default_max_tokens": 64, "resilience": short},
            "chat-continue": {"candidates": ["vllm-cont", "wide"]},
            "embed": {"candidates": ["vllm-embed"]},
            "embed-open": {"candidates": ["vllm-embed-open"]},
        },
        "tenants": {"acme": {"keys": [key_hash(KEY)]}},
        # per_try_timeout_s and stream_idle_timeout_s (between a stream's reads) both bound the wait for a stream's
        # response headers, which vLLM sends with its first event: a heavy request (n=4, 20 logprobs) on the CPU
        # engine late in the suite has taken over 60 s, and one over 15 s failed a CI run. chat-stall's 2 s between
        # events is its route's own, kept by the gateway's relay, not by the socket.
        "resilience": {"backoff_ms": [1, 5], "ttft_timeout_s": 30, "per_try_timeout_s": 100,
                       "stream_idle_timeout_s": 100, "deadline_s": 120},
    }


@pytest.fixture(scope="session")
def gateway(vllm: Vllm, standin: Wide, logs: Path) -> Iterator[servers.Process]:
    """`switchyard serve` with the policy above."""
    path = logs / "policy.yaml"
    path.write_text(yaml.safe_dump(policy(vllm, standin), sort_keys=False))
    process = servers.gateway(path, logs)
    try:
        process.start(deadline_s=30)
        yield process
    finally:
        process.stop()


@pytest.fixture
def gw(gateway: servers.Process) -> Iterator[openai.OpenAI]:
    """The official client, pointed at the gateway."""
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key=KEY, max_retries=0, timeout=120) as client:
        yield client


@pytest.fixture
def direct(vllm: Vllm) -> Iterator[openai.OpenAI]:
    """The official client, pointed straight at vLLM's generate server."""
    with openai.OpenAI(base_url=vllm.generate.url + "/v1", api_key="none", max_retries=0, timeout=120) as client:
        yield client


@pytest.fixture
def direct_embed(vllm: Vllm) -> Iterator[openai.OpenAI]:
    """The official client, pointed straight at vLLM's pooling server."""
    with openai.OpenAI(base_url=vllm.pooling.url + "/v1", api_key="none", max_retries=0, timeout=120) as client:
        yield client
