"""The Messages API end to end: the official anthropic SDK against the gateway, upstreams real servers on loopback.

Three deliveries: `claude` (kind anthropic) and `native` (an OpenAI-compatible server declaring `messages`, as
vLLM does) get the request as it came, from a fake Anthropic server; `chatty`, an OpenAI-compatible stand-in,
gets it translated to chat completions. Answers are compared with what the same request gets from the upstream
directly.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest

from gateway.serving.app import Gateway, Settings
from gateway.tools.standin import Fault, StandIn
from gateway.tools.standin.messages import MessagesFault, MessagesStandIn
from tests.conftest import KEY, OTHER_KEY, Loop, Served, key_hash, upstream_spec, wait_for, write_policy

UPSTREAM_KEY = "sk-ant-api03-Zq8xKv1Lw9Tr4Yb7Nc2Hd5Jf0Gm3Ps6"
HELLO: list[Any] = [{"role": "user", "content": "Say hello."}]
WEATHER = {"name": "weather", "description": "The weather in a city.",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


@dataclass
class Messages:
    """The gateway, its three upstreams, and clients for it."""

    loop: Loop
    gateway: Gateway
    served: Served
    claude: MessagesStandIn
    native: MessagesStandIn
    chatty: StandIn
    claude_url: str
    chatty_port: int
    clients: list[Any]

    def client(self, key: str = KEY, **options: Any) -> anthropic.Anthropic:
        made = anthropic.Anthropic(base_url=self.served.url, api_key=key, max_retries=0, **options)
        self.clients.append(made)
        return made

    def async_client(self, key: str = KEY) -> anthropic.AsyncAnthropic:
        return anthropic.AsyncAnthropic(base_url=self.served.url, api_key=key, max_retries=0)

    def direct(self) -> anthropic.Anthropic:
        """A client straight to the fake Anthropic server, as the gateway's own key."""
        made = anthropic.Anthropic(base_url=self.claude_url, api_key=None, auth_token=None,
                                   default_headers={"x-api-key": UPSTREAM_KEY}, max_retries=0)
        self.clients.append(made)
        return made


def start(loop: Loop, folder: Path, settings: dict[str, Any] | None = None, **sections: Any) -> Messages:
    claude, native, chatty = MessagesStandIn("claude", key=UPSTREAM_KEY), MessagesStandIn("native"), StandIn("chatty")
    claude_url = loop.serve(claude).url
    upstreams = {
        "claude": {"kind": "anthropic", "base_url": claude_url + "/v1", "model": "claude-upstream-model",
                   "api_key": UPSTREAM_KEY, "region": "us", "hosting": "third_party",
                   "cost": {"input_per_mtok": 3.0, "output_per_mtok": 15.0}},
        "native": upstream_spec(loop.serve(native).url, "native-model",
                                capabilities=["tools", "json", "vision", "messages"]),
        "chatty": upstream_spec((chatty_served := loop.serve(chatty)).url, "chatty-model"),
    }
    models = {"claude-sonnet-4-5": {"candidates": ["claude"]}, "native": {"candidates": ["native"]},
              "translated": {"candidates": ["chatty"]}, "fallback": {"candidates": ["native", "chatty"]},
              **sections.pop("models", {})}
    path = write_policy(folder, {**upstreams, **sections.pop("upstreams", {})}, models, **sections)
    gateway = Gateway(Settings(policy=str(path), **(settings or {})))
    return Messages(loop, gateway, loop.serve(gateway), claude, native, chatty, claude_url, chatty_served.port, [])


@pytest.fixture
def stack(loop: Loop, tmp_path: Path) -> Iterator[Messages]:
    made = start(loop, tmp_path)
    yield made
    for client in made.clients:
        client.close()


def test_plain_pass_through_matches_the_upstream(stack: Messages) -> None:
    raw = stack.client().messages.with_raw_response.create(model="claude-sonnet-4-5", max_tokens=64,
                                                            messages=HELLO)
    message = raw.parse()
    straight = stack.direct().messages.create(model="claude-upstream-model", max_tokens=64, messages=HELLO)
    assert raw.headers["x-switchyard-upstream"] == "claude"
    assert message.content == straight.content
    assert message.usage == straight.usage
    assert message.model == "claude-upstream-model"
    seen = stack.claude.seen[0]
    assert seen.headers["x-api-key"] == UPSTREAM_KEY
    assert seen.headers["anthropic-version"] == stack.claude.seen[1].headers["anthropic-version"]  # the SDK's own
    assert "authorization" not in seen.headers
    assert seen.body == {"model": "claude-upstream-model", "max_tokens": 64, "messages": HELLO}


# --- helpers --------------------------------------------------------------------------------------------------------


def events(stream: Any) -> list[dict[str, Any]]:
    """Every raw event of a stream, as plain data."""
    return [event.model_dump(exclude_none=True) for event in stream]


def text_of(found: list[dict[str, Any]]) -> str:
    return "".join(e["delta"].get("text", "") for e in found if e["type"] == "content_block_delta")


def post(stack: Messages, body: dict[str, Any], headers: dict[str, str] | None = None,
         path: str = "/v1/messages") -> httpx.Response:
    return httpx.post(stack.served.url + path, content=orjson.dumps(body), timeout=30,
                      headers={"x-api-key": KEY, "content-type": "application/json", **(headers or {})})


def metric(stack: Messages, name: str, **labels: str) -> float:
    stack.loop.settled()
    return stack.gateway.metrics.registry.get_sample_value(name, labels) or 0.0


# --- pass-through ---------------------------------------------------------------------------------------------------


def test_a_stream_passes_through_event_for_event(stack: Messages) -> None:
    through = events(stack.client().messages.create(model="claude-sonnet-4-5", max_tokens=64, messages=HELLO,
                                                    stream=True))
    straight = events(stack.direct().messages.create(model="claude-upstream-model", max_tokens=64, messages=HELLO,
                                                     stream=True))
    for found in (through, straight):
        found[0]["message"].pop("id")
    assert through == straight
    assert [e["type"] for e in through][-2:] == ["message_delta", "message_stop"]


def test_version_and_beta_headers_reach_anthropic_only(stack: Messages) -> None:
    beta = {"anthropic-beta": "prompt-caching-2024-07-31"}
    stack.client(default_headers=beta).messages.create(model="claude-sonnet-4-5", max_tokens=8, messages=HELLO)
    stack.client(default_headers=beta).messages.create(model="native", max_tokens=8, messages=HELLO)
    assert stack.claude.seen[0].headers["anthropic-beta"] == "prompt-caching-2024-07-31"
    native = stack.native.seen[0]
    assert "anthropic-beta" not in native.headers
    assert "anthropic-version" not in native.headers
    assert "x-api-key" not in native.headers
    assert native.body["model"] == "native-model"


def test_cache_tokens_are_counted_and_costed(stack: Messages) -> None:
    system = [{"type": "text", "text": "a long system prompt", "cache_control": {"type": "ephemeral"}}]
    raw = stack.client().messages.with_raw_response.create(model="claude-sonnet-4-5", max_tokens=64,
                                                            messages=HELLO, system=system)
    usage = raw.parse().usage
    assert (usage.cache_read_input_tokens, usage.cache_creation_input_tokens) == (4, 2)
    assert stack.claude.seen[0].body["system"] == system  # cache_control kept for an upstream that honours it
    prompt = 10 + 4 + 2
    expected = (prompt * 3.0 + usage.output_tokens * 15.0) / 1e6
    assert float(raw.headers["x-switchyard-cost-usd"]) == pytest.approx(expected)
    assert metric(stack, "switchyard_tokens_total", tenant="acme", upstream="claude", type="prompt") == prompt


def test_a_tool_round_trip_passes_through(stack: Messages) -> None:
    client = stack.client()
    first = client.messages.create(model="claude-sonnet-4-5", max_tokens=64, messages=HELLO, tools=[WEATHER])
    assert first.stop_reason == "tool_use"
    call = first.content[0]
    assert call.type == "tool_use"
    assert call.input == {"city": "Paris"}
    history: list[Any] = [*HELLO, {"role": "assistant", "content": [c.model_dump() for c in first.content]},
                          {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id,
                                                        "content": "sunny, 21 C"}]}]
    second = client.messages.create(model="claude-sonnet-4-5", max_tokens=64, messages=history, tools=[WEATHER])
    assert second.stop_reason == "end_turn"
    assert stack.claude.seen[1].body["messages"] == orjson.loads(orjson.dumps(history))


# --- translated -----------------------------------------------------------------------------------------------------


def test_a_translated_answer_says_what_the_chat_upstream_said(stack: Messages) -> None:
    raw = stack.client().messages.with_raw_response.create(
        model="translated", max_tokens=64, messages=HELLO, system="be brief", stop_sequences=["END"],
        metadata={"user_id": "u-42"}, extra_body={"temperature": 0.5, "top_p": 0.9, "top_k": 4})
    message = raw.parse()
    direct = httpx.post(f"http://127.0.0.1:{stack.chatty_port}/v1/chat/completions", timeout=10,
                        json={"model": "chatty-model", "messages": [{"role": "user", "content": "x"}]}).json()
    assert raw.headers["x-switchyard-upstream"] == "chatty"
    assert [b.type for b in message.content] == ["text"]
    assert message.content[0].text == direct["choices"][0]["message"]["content"]
    assert (message.usage.input_tokens, message.usage.output_tokens) == (10, direct["usage"]["completion_tokens"])
    assert message.stop_reason == "end_turn"
    seen = stack.chatty.seen[0]
    assert seen.path == "/v1/chat/completions"
    assert seen.body["messages"] == [{"role": "system", "content": "be brief"}, *HELLO]
    assert {k: seen.body[k] for k in ("model", "max_tokens", "temperature", "top_p", "top_k", "stop", "user")} == {
        "model": "chatty-model", "max_tokens": 64, "temperature": 0.5, "top_p": 0.9, "top_k": 4, "stop": ["END"],
        "user": "u-42"}


def test_a_translated_stream_reads_as_anthropics(stack: Messages) -> None:
    with stack.client().messages.stream(model="translated", max_tokens=64, messages=HELLO) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    plain = stack.client().messages.create(model="translated", max_tokens=64, messages=HELLO)
    assert "".join(pieces) == final.content[0].text == plain.content[0].text  # type: ignore[union-attr]
    assert len(pieces) > 1
    assert final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (plain.usage.input_tokens,
                                                                      plain.usage.output_tokens)
    assert stack.chatty.seen[0].body["stream_options"] == {"include_usage": True}


def test_a_translated_tool_round_trip(stack: Messages) -> None:
    client = stack.client()
    first = client.messages.create(model="translated", max_tokens=64, messages=HELLO, tools=[WEATHER],
                                   tool_choice={"type": "auto"})
    call = first.content[0]
    assert first.stop_reason == "tool_use"
    assert call.type == "tool_use"
    assert (call.name, call.input) == ("weather", {"city": "Paris"})
    history: list[Any] = [*HELLO, {"role": "assistant", "content": [c.model_dump() for c in first.content]},
                          {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id,
                                                        "content": [{"type": "text", "text": "sunny"}]}]}]
    second = client.messages.create(model="translated", max_tokens=64, messages=history, tools=[WEATHER],
                                    tool_choice={"type": "none"})
    assert second.content[0].type == "text"
    sent = stack.chatty.seen[1].body
    assert sent["tools"][0]["function"]["name"] == "weather"
    assert sent["messages"][1]["tool_calls"][0]["id"] == call.id
    assert orjson.loads(sent["messages"][1]["tool_calls"][0]["function"]["arguments"]) == {"city": "Paris"}
    assert sent["messages"][2] == {"role": "tool", "tool_call_id": call.id, "content": "sunny"}


def test_cache_control_is_dropped_for_a_chat_upstream_and_counted(stack: Messages) -> None:
    system = [{"type": "text", "text": "long", "cache_control": {"type": "ephemeral"}}]
    stack.client().messages.create(model="translated", max_tokens=8, messages=HELLO, system=system)
    assert b"cache_control" not in orjson.dumps(stack.chatty.seen[0].body)
    assert metric(stack, "switchyard_translation_dropped_total", upstream="chatty", field="cache_control") == 1


async def test_the_async_client_plain_and_streamed(stack: Messages) -> None:
    async with stack.async_client() as client:
        plain = await client.messages.create(model="translated", max_tokens=64, messages=HELLO)
        async with client.messages.stream(model="claude-sonnet-4-5", max_tokens=64, messages=HELLO) as stream:
            final = await stream.get_final_message()
    assert plain.content[0].text.startswith("[chatty]")  # type: ignore[union-attr]
    assert final.content[0].text.startswith("[claude]")  # type: ignore[union-attr]


# --- count_tokens, auth and errors ----------------------------------------------------------------------------------


def test_count_tokens_is_the_gateways_estimate(stack: Messages) -> None:
    from gateway.inbound.messages.count import input_tokens

    counted = stack.client().messages.count_tokens(model="translated", messages=HELLO, system="be brief")
    assert counted.input_tokens == input_tokens({"model": "translated", "messages": HELLO, "system": "be brief"})
    assert counted.input_tokens > 0
    with pytest.raises(anthropic.NotFoundError):
        stack.client().messages.count_tokens(model="no-such-route", messages=HELLO)


@pytest.mark.parametrize("how", ["x-api-key", "bearer"])
def test_either_header_carries_the_key(stack: Messages, how: str) -> None:
    headers = {"x-api-key": KEY} if how == "x-api-key" else {"authorization": f"Bearer {KEY}"}
    client = anthropic.Anthropic(base_url=stack.served.url, api_key=None, auth_token=None, default_headers=headers,
                                 max_retries=0)
    stack.clients.append(client)
    assert client.messages.create(model="translated", max_tokens=8, messages=HELLO).type == "message"


def test_a_missing_or_wrong_key_is_an_authentication_error(stack: Messages) -> None:
    response = post(stack, {"model": "translated", "max_tokens": 8, "messages": HELLO}, {"x-api-key": ""})
    assert response.status_code == 401
    assert response.json() == {"type": "error", "error": {"type": "authentication_error",
                                                          "message": "missing API key: send 'x-api-key: <key>'"}}
    with pytest.raises(anthropic.AuthenticationError) as caught:
        stack.client(key="sk-sy-wrong-key-0123456789abcdef0123456789").messages.create(
            model="translated", max_tokens=8, messages=HELLO)
    assert caught.value.body == {"type": "error", "error": {"type": "authentication_error",
                                                            "message": "invalid API key"}}


def test_an_unknown_route_is_not_found(stack: Messages) -> None:
    with pytest.raises(anthropic.NotFoundError) as caught:
        stack.client(key=OTHER_KEY).messages.create(model="translated", max_tokens=8, messages=HELLO)
    assert caught.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    assert caught.value.response.headers["x-request-id"]


@pytest.mark.parametrize(("body", "param"), [
    ({"model": "translated", "messages": HELLO}, "max_tokens"),
    ({"model": "translated", "max_tokens": 8, "messages": []}, "messages"),
    ({"model": "translated", "max_tokens": 8, "messages": HELLO, "tools": [{"type": "bash_20250124",
                                                                          "name": "bash"}]}, "tools.0"),
])
def test_a_bad_request_is_an_invalid_request_error(stack: Messages, body: dict[str, Any], param: str) -> None:
    response = post(stack, body)
    assert response.status_code == 400
    error = response.json()
    assert error["type"] == "error"
    assert error["error"]["type"] == "invalid_request_error"
    assert param in error["error"]["message"] or param == "max_tokens"


def test_an_anthropic_client_error_passes_through(stack: Messages) -> None:
    stack.claude.faults.append(MessagesFault(status=400))
    with pytest.raises(anthropic.BadRequestError) as caught:
        stack.client().messages.create(model="claude-sonnet-4-5", max_tokens=8, messages=HELLO)
    assert caught.value.body == {"type": "error", "error": {"type": "invalid_request_error",
                                                            "message": "claude: error 400"}}


def test_a_rate_limit_is_a_rate_limit_error_with_retry_after(loop: Loop, tmp_path: Path) -> None:
    stack = start(loop, tmp_path, tenants={"acme": {"keys": [key_hash(KEY)], "rate_limit": {"requests_per_minute": 1}},
                                           "limited": {"keys": [key_hash(OTHER_KEY)]}})
    client = stack.client()
    raw = client.messages.with_raw_response.create(model="translated", max_tokens=8, messages=HELLO)
    assert raw.headers["anthropic-ratelimit-requests-limit"] == "1"
    assert raw.headers["anthropic-ratelimit-requests-remaining"] == "0"
    with pytest.raises(anthropic.RateLimitError) as caught:
        client.messages.create(model="translated", max_tokens=8, messages=HELLO)
    assert caught.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert int(caught.value.response.headers["retry-after"]) >= 1


def test_every_candidate_failing_is_an_api_error(stack: Messages) -> None:
    stack.native.faults.extend([MessagesFault(status=529)] * 4)
    stack.chatty.faults.extend([Fault(status=503)] * 4)
    response = post(stack, {"model": "fallback", "max_tokens": 8, "messages": HELLO})
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["type"] == "api_error"
    assert "native: http_529" in error["message"]
    assert "chatty: http_503" in error["message"]


def test_a_saturated_route_is_overloaded_with_retry_after(loop: Loop, tmp_path: Path) -> None:
    slow = MessagesStandIn("slow")
    slow.faults.append(MessagesFault(delay_s=2))
    spec = upstream_spec(loop.serve(slow).url, "m", capabilities=["messages"], max_concurrency=1)
    stack = start(loop, tmp_path, upstreams={"slow": spec}, models={"busy": {"candidates": ["slow"]}})
    body = {"model": "busy", "max_tokens": 8, "messages": HELLO}
    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(post, stack, body)
        wait_for(lambda: len(slow.seen) == 1, what="the first request at the upstream")
        response = post(stack, body)
        assert held.result().status_code == 200
    assert response.status_code == 529
    assert response.json()["error"]["type"] == "overloaded_error"
    assert response.headers["retry-after"] == "1"


# --- resilience -----------------------------------------------------------------------------------------------------


def test_a_failing_native_upstream_falls_back_to_a_translated_one(stack: Messages) -> None:
    stack.native.faults.extend([MessagesFault(status=500)] * 4)
    raw = stack.client().messages.with_raw_response.create(model="fallback", max_tokens=64, messages=HELLO,
                                                            stream=True)
    found = events(raw.parse())
    assert raw.headers["x-switchyard-upstream"] == "chatty"
    assert text_of(found).startswith("[chatty]")
    assert found[-1]["type"] == "message_stop"


@pytest.mark.parametrize("stream", [False, True])
def test_a_silent_upstream_times_out_and_falls_back(loop: Loop, tmp_path: Path, stream: bool) -> None:
    quick = {"backoff_ms": [1, 5], "attempts_per_upstream": 1, "per_try_timeout_s": 0.5, "ttft_timeout_s": 0.5,
             "deadline_s": 30}
    stack = start(loop, tmp_path, models={"quick": {"candidates": ["native", "chatty"]}}, resilience=quick)
    stack.native.faults.append(MessagesFault(delay_s=3))
    raw = stack.client().messages.with_raw_response.create(model="quick", max_tokens=64, messages=HELLO,
                                                            stream=stream)
    assert raw.headers["x-switchyard-upstream"] == "chatty"
    text = text_of(events(raw.parse())) if stream else raw.parse().content[0].text
    assert text.startswith("[chatty]")
    wait_for(lambda: metric(stack, "switchyard_upstream_errors_total", upstream="native", reason="timeout") == 1,
             what="the timeout counted")


def test_a_stream_cut_after_bytes_went_out_ends_with_an_error_event(stack: Messages) -> None:
    stack.claude.faults.append(MessagesFault(cut_after=3, pause_s=0.3))
    found: list[dict[str, Any]] = []
    stream = stack.client().messages.create(model="claude-sonnet-4-5", max_tokens=64, messages=HELLO, stream=True)
    with pytest.raises(anthropic.APIStatusError) as caught:
        found.extend(event.model_dump() for event in stream)  # what came before the error stays in found
    assert caught.value.body["error"]["type"] == "api_error"  # type: ignore[index]
    assert "incomplete" in caught.value.body["error"]["message"]  # type: ignore[index]
    assert text_of(found).startswith("[claude]")
    assert "message_stop" not in [e["type"] for e in found]
    wait_for(lambda: metric(stack, "switchyard_stream_failures_total", upstream="claude", reason="cut",
                            outcome="error_event") == 1, what="the cut counted")


def test_an_upstreams_own_error_event_reaches_the_client_once(stack: Messages) -> None:
    stack.claude.faults.append(MessagesFault(error_after=2, pause_s=0.3))
    response = post(stack, {"model": "claude-sonnet-4-5", "max_tokens": 64, "messages": HELLO, "stream": True})
    assert response.text.count("event: error") == 1
    assert "overloaded_error" in response.text
    assert "message_stop" not in response.text


def test_a_translated_stream_cut_ends_with_an_error_event(stack: Messages) -> None:
    stack.chatty.faults.append(Fault(cut_after=3))
    response = post(stack, {"model": "translated", "max_tokens": 64, "messages": HELLO, "stream": True})
    assert response.status_code == 200
    assert response.text.count("event: error") == 1
    assert "event: message_stop" not in response.text
    assert "[chatty]" in response.text


# --- one gateway for both APIs --------------------------------------------------------------------------------------


def test_metrics_and_audit_name_the_endpoint(loop: Loop, tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    stack = start(loop, tmp_path, settings={"audit": (str(audit),)})
    stack.client().messages.create(model="translated", max_tokens=8, messages=HELLO)
    wait_for(lambda: metric(stack, "switchyard_requests_total", tenant="acme", endpoint="messages",
                            route="translated", upstream="chatty", status="200") == 1, what="the request counted")
    assert 'endpoint="messages"' in httpx.get(stack.served.url + "/metrics", timeout=5).text
    wait_for(lambda: audit.exists() and b'"endpoint"' in audit.read_bytes(), what="the audit record")
    record = next(orjson.loads(line) for line in audit.read_bytes().splitlines() if b'"endpoint"' in line)
    assert (record["endpoint"], record["upstream"], record["status"]) == ("messages", "chatty", 200)
    stack.client().close()


PERSONAL = "mail jane.doe@example.com"
CLASSES = {"public": {}, "personal": {"hosting": ["self"]}}
DETECT = {"detectors": [{"detect": ["email"], "class": "personal"}]}


@pytest.mark.parametrize("where", ["system", "text", "tool_use input", "tool_result", "none"])
def test_personal_data_in_any_field_goes_only_where_its_class_may(loop: Loop, tmp_path: Path, where: str) -> None:
    stack = start(loop, tmp_path, data_classes=CLASSES, classify=DETECT,
                  models={"mixed": {"candidates": ["claude", "native"]}})
    call = {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}}
    result = {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"}
    body: dict[str, Any] = {"model": "mixed", "max_tokens": 8, "system": "be brief", "tools": [WEATHER],
                            "messages": [{"role": "user", "content": "weather?"},
                                         {"role": "assistant", "content": [call]},
                                         {"role": "user", "content": [result]}]}
    if where == "system":
        body["system"] = PERSONAL
    elif where == "text":
        body["messages"][0]["content"] = PERSONAL
    elif where == "tool_use input":
        call["input"] = {"city": PERSONAL}
    elif where == "tool_result":
        result["content"] = [{"type": "text", "text": PERSONAL}]
    raw = stack.client().messages.with_raw_response.create(**body)
    served = raw.headers["x-switchyard-upstream"]
    if where == "none":
        assert (served, raw.headers["x-switchyard-data-class"]) == ("claude", "public")
    else:
        assert (served, raw.headers["x-switchyard-data-class"]) == ("native", "personal")
        assert stack.claude.seen == []


def test_personal_data_with_no_self_hosted_upstream_is_refused(loop: Loop, tmp_path: Path) -> None:
    stack = start(loop, tmp_path, data_classes=CLASSES, classify=DETECT)
    with pytest.raises(anthropic.PermissionDeniedError) as caught:
        stack.client().messages.create(model="claude-sonnet-4-5", max_tokens=8,
                                       messages=[{"role": "user", "content": PERSONAL}])
    assert caught.value.body["error"]["type"] == "permission_error"  # type: ignore[index]
    assert stack.claude.seen == []


def test_one_budget_counts_both_apis(loop: Loop, tmp_path: Path) -> None:
    """chatty costs $1 in and $2 out per Mtok; each answer is 10 prompt and 9 completion tokens."""
    cost = (10 * 1.0 + 9 * 2.0) / 1e6
    stack = start(loop, tmp_path, models={"chat": {"candidates": ["chatty"]}},
                  tenants={"acme": {"keys": [key_hash(KEY)], "budget": {"usd_per_day": 2.5 * cost}},
                           "limited": {"keys": [key_hash(OTHER_KEY)]}})
    chat = stack.loop.client(stack.served.url + "/v1")
    chat.chat.completions.create(model="chat", max_tokens=9, messages=[{"role": "user", "content": "x" * 24}])
    stack.client().messages.create(model="translated", max_tokens=9, messages=[{"role": "user", "content": "x" * 24}])
    with pytest.raises(anthropic.RateLimitError) as caught:
        stack.client().messages.create(model="translated", max_tokens=9, messages=HELLO)
    assert "budget" in caught.value.body["error"]["message"]  # type: ignore[index]
    assert caught.value.response.headers["retry-after"]
    with pytest.raises(openai.RateLimitError):
        chat.chat.completions.create(model="chat", max_tokens=9, messages=[{"role": "user", "content": "hi"}])
