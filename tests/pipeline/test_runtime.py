"""A policy with the clients built for it: each upstream's spec from the policy, the right client for its kind."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.pipeline.runtime import Runtime, client_spec
from gateway.routing.policy.loader import load_policy
from gateway.routing.policy.schema import Resilience, Upstream
from gateway.upstreams.catalog import LitellmCatalog
from gateway.upstreams.http import Pool
from gateway.upstreams.openai import OpenAIUpstream
from gateway.upstreams.spec import Limits, Timeouts
from tests.conftest import Loop, upstream_spec, write_policy

# litellm silences these pydantic warnings process-wide at import; pytest's "error" filter would revive them
pytestmark = pytest.mark.filterwarnings("ignore:.*`ReadOnly` qualifier:UserWarning")


def test_a_client_spec_carries_the_upstream_and_the_policy_wide_timeouts() -> None:
    upstream = Upstream.model_validate({
        "kind": "openai", "base_url": "http://127.0.0.1:1/v1", "model": "served-model", "api_key": "sk-provider-1",
        "region": "eu-west", "hosting": "self", "context_window": 8192, "max_concurrency": 4,
        "capabilities": ["tools", "json"], "forward_headers": ["x-trace"],
        "limits": {"body_bytes": 1000, "decompressed_bytes": 2000, "error_body_bytes": 300, "sse_event_bytes": 400}})
    resilience = Resilience(connect_timeout_s=1.5, per_try_timeout_s=7, stream_idle_timeout_s=3)
    spec = client_spec(upstream, resilience)
    assert (spec.model, spec.kind, spec.base_url, spec.key) == ("served-model", "openai", "http://127.0.0.1:1/v1",
                                                                 "sk-provider-1")
    assert spec.limits == Limits(body_bytes=1000, decompressed_bytes=2000, error_body_bytes=300, sse_event_bytes=400)
    assert spec.timeouts == Timeouts(connect_s=1.5, per_try_s=7, stream_idle_s=3)
    assert (spec.region, spec.hosting, spec.context_window, spec.max_concurrency) == ("eu-west", "self", 8192, 4)
    assert (spec.capabilities, spec.forward_headers) == (frozenset({"tools", "json"}), frozenset({"x-trace"}))


def test_build_makes_a_client_per_upstream_of_its_kind_and_aclose_closes_them(loop: Loop, tmp_path: Path) -> None:
    from gateway.upstreams.litellm_adapter import LitellmUpstream

    upstreams = {"local": upstream_spec("http://127.0.0.1:1"),
                 "claude": upstream_spec("http://127.0.0.1:2", model="claude-3-haiku-20240307", kind="anthropic",
                                         api_key="sk-ant-test")}
    path = write_policy(tmp_path, upstreams, {"chat": {"candidates": ["local", "claude"]}})
    policy = load_policy(path, catalog=LitellmCatalog())

    async def run() -> Runtime:
        pool = Pool()
        runtime = Runtime.build(policy, pool)
        await runtime.aclose()
        await pool.close()
        return runtime

    runtime = loop.run(run())
    assert runtime.policy is policy
    assert list(runtime.upstreams) == ["local", "claude"]
    local, claude = runtime.upstreams["local"], runtime.upstreams["claude"]
    assert isinstance(local, OpenAIUpstream)
    assert isinstance(claude, LitellmUpstream)
    assert (local.name, local.spec.model) == ("local", "upstream-model")
    assert claude.spec.kind == "anthropic"
    assert claude.closed
