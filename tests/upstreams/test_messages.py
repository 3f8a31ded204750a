"""Which upstreams take Messages requests as they are, what an Anthropic upstream defaults to, what is a count."""

from __future__ import annotations

import pytest

from gateway.pipeline.runtime import client_spec
from gateway.routing.policy.schema import Resilience, Upstream
from gateway.upstreams.messages import ANTHROPIC_URL, is_count, speaks_messages, with_defaults
from gateway.upstreams.spec import UpstreamSpec


def spec_of(doc: dict[str, object]) -> UpstreamSpec:
    """The client's spec of a policy's upstream."""
    return client_spec(Upstream.model_validate(doc), Resilience())


@pytest.mark.parametrize(("spec", "speaks"), [
    ({"kind": "anthropic", "model": "claude"}, True),
    ({"base_url": "http://vllm:8000/v1", "model": "qwen", "capabilities": ["tools", "messages"]}, True),
    ({"base_url": "http://vllm:8000/v1", "model": "qwen"}, False),
    ({"base_url": "http://vllm:8000/v1", "model": "qwen", "capabilities": ["tools"]}, False),
    ({"kind": "gemini", "model": "gemini-2.5-pro"}, False),
])
def test_who_speaks_messages(spec: dict[str, object], speaks: bool) -> None:
    assert speaks_messages(spec_of(spec)) is speaks


def test_an_anthropic_upstream_defaults_to_anthropics_url_and_the_environments_key(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-from-env")
    filled = with_defaults(spec_of({"kind": "anthropic", "model": "claude"}))
    assert filled.base_url == ANTHROPIC_URL
    assert filled.api_key is not None
    assert filled.api_key.get_secret_value() == "sk-ant-from-env"
    own = with_defaults(spec_of({"kind": "anthropic", "model": "claude", "api_key": "sk-ant-own",
                                 "base_url": "https://proxy.example/v1"}))
    assert own.api_key is not None
    assert (own.base_url, own.api_key.get_secret_value()) == ("https://proxy.example/v1", "sk-ant-own")


@pytest.mark.parametrize(("body", "counts"), [
    (b'{"input_tokens": 12}', True),
    (b'{"input_tokens": 0, "context_management": {"original_input_tokens": 40}}', True),
    (b'{"input_tokens": -1}', False),
    (b'{"input_tokens": 1.5}', False),
    (b'{"input_tokens": true}', False),
    (b'{"input_tokens": "12"}', False),
    (b'{"tokens": 12}', False),
    (b'[{"input_tokens": 12}]', False),
    (b'{"input_tokens": ' + b"9" * 30 + b"}", False),
    (b"<html>12</html>", False),
    (b"", False),
])
def test_what_is_a_count(body: bytes, counts: bool) -> None:
    assert is_count(body) is counts
