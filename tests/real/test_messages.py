"""The Messages API against real vLLM 0.32: natively through its /v1/messages, and translated through its chat
completions, each compared with the same request sent to vLLM's /v1/messages directly.

The model is random weights: its text means nothing, so these compare structure, stop reasons and usage.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest
import yaml
from anthropic.types import Message

from tests.conftest import KEY, key_hash
from tests.real import servers
from tests.real.conftest import GENERATE, Vllm
from tests.real.wire import shape

pytestmark = pytest.mark.real

HELLO: list[Any] = [{"role": "user", "content": "Say hello."}]
SAME: dict[str, Any] = {"max_tokens": 8, "temperature": 0}


@pytest.fixture(scope="module")
def messages_gateway(vllm: Vllm, tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.Process]:
    """`switchyard serve` with two routes over the generate server: one native, one translated."""
    def upstream(**extra: Any) -> dict[str, Any]:
        return {"base_url": vllm.generate.url + "/v1", "model": GENERATE, "region": "eu-west", "hosting": "self",
                "cost": {"input_per_mtok": 0.1, "output_per_mtok": 0.2}, **extra}

    doc = {"version": 1,
           "upstreams": {"vllm-native": upstream(capabilities=["tools", "json", "messages"]),
                         "vllm-chat": upstream(capabilities=["tools", "json"])},
           "models": {"native": {"candidates": ["vllm-native"]}, "translated": {"candidates": ["vllm-chat"]}},
           "tenants": {"acme": {"keys": [key_hash(KEY)]}},
           "resilience": {"backoff_ms": [1, 5], "ttft_timeout_s": 60, "per_try_timeout_s": 60, "deadline_s": 120}}
    folder: Path = tmp_path_factory.mktemp("messages")
    path = folder / "policy.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    process = servers.gateway(path, folder)
    try:
        process.start(deadline_s=30)
        yield process
    finally:
        process.stop()


@pytest.fixture
def gw(messages_gateway: servers.Process) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=messages_gateway.url, api_key=KEY, max_retries=0, timeout=120) as client:
        yield client


@pytest.fixture
def direct(vllm: Vllm) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=vllm.generate.url, api_key="none", max_retries=0, timeout=120) as client:
        yield client


def plain(client: anthropic.Anthropic, model: str) -> Any:
    return client.messages.with_raw_response.create(model=model, messages=HELLO, max_tokens=SAME["max_tokens"],
                                                    extra_body={"temperature": 0})


@pytest.mark.parametrize("route", ["native", "translated"])
def test_a_plain_answer_matches_vllms_own(gw: anthropic.Anthropic, direct: anthropic.Anthropic, route: str) -> None:
    through, straight = plain(gw, route), plain(direct, GENERATE)
    assert through.status_code == straight.status_code == 200
    assert through.headers["x-switchyard-upstream"] == ("vllm-native" if route == "native" else "vllm-chat")
    ours, theirs = through.parse(), straight.parse()
    Message.model_validate(ours.model_dump())
    assert [b.type for b in ours.content] == [b.type for b in theirs.content] == ["text"]
    assert ours.stop_reason == theirs.stop_reason
    assert (ours.usage.input_tokens, ours.usage.output_tokens) == (theirs.usage.input_tokens,
                                                                    theirs.usage.output_tokens)
    if route == "native":
        assert shape(through.http_response.json()) == shape(straight.http_response.json())


@pytest.mark.parametrize("route", ["native", "translated"])
def test_a_stream_matches_vllms_own(gw: anthropic.Anthropic, direct: anthropic.Anthropic, route: str) -> None:
    def run(client: anthropic.Anthropic, model: str) -> tuple[list[str], Message]:
        with client.messages.stream(model=model, messages=HELLO, max_tokens=SAME["max_tokens"],
                                    extra_body={"temperature": 0}) as stream:
            kinds = [event.type for event in stream]
            return kinds, stream.get_final_message()

    (ours, ours_final), (theirs, theirs_final) = run(gw, route), run(direct, GENERATE)
    assert ours[0] == theirs[0] == "message_start"
    assert ours[-1] == theirs[-1] == "message_stop"
    assert [b.type for b in ours_final.content] == [b.type for b in theirs_final.content]
    assert ours_final.stop_reason == theirs_final.stop_reason
    assert ours_final.usage.output_tokens == theirs_final.usage.output_tokens
    if route == "native":
        assert ours == theirs


def test_count_tokens_is_near_vllms_own(gw: anthropic.Anthropic, direct: anthropic.Anthropic) -> None:
    ours = gw.messages.count_tokens(model="native", messages=HELLO).input_tokens
    theirs = direct.messages.count_tokens(model=GENERATE, messages=HELLO).input_tokens
    assert ours > 0
    assert theirs > 0
    assert abs(ours - theirs) <= max(ours, theirs)  # an estimate: the same order, not the same count


def test_a_bad_request_is_anthropics_error_either_way(gw: anthropic.Anthropic) -> None:
    for route in ("native", "translated"):
        with pytest.raises(anthropic.BadRequestError) as caught:
            gw.messages.create(model=route, messages=HELLO, max_tokens=100_000)
        assert caught.value.body["type"] == "error"  # type: ignore[index]
        assert caught.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
