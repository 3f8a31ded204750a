"""The pipeline end to end: the hot endpoints, driven by the official openai client against real loopback upstreams."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import httpx
import openai
import pytest

from gateway.serving.app import Gateway, Settings
from gateway.tools.standin import Fault, StandIn
from tests.conftest import KEY, OTHER_KEY, Loop, Stack, start_stack, upstream_spec, wait_for, write_policy

HELLO = [{"role": "user", "content": "Hello there"}]


def client(stack: Stack, key: str = KEY, **options: object) -> openai.OpenAI:
    return stack.client(key, **options)


def test_chat_completion_is_served_by_the_first_candidate(stack: Stack) -> None:
    raw = client(stack).chat.completions.with_raw_response.create(model="chat", messages=HELLO)
    completion = raw.parse()
    assert completion.choices[0].message.content.startswith("[primary]")
    assert completion.model == "primary-model"
    assert raw.headers["x-switchyard-upstream"] == "primary"
    assert raw.headers["x-switchyard-region"] == "eu-west"
    assert len(raw.headers["x-switchyard-policy"]) == 12
    assert len(raw.headers["x-request-id"]) >= 16
    assert float(raw.headers["x-switchyard-cost-usd"]) == pytest.approx((10 * 1.0 + 9 * 2.0) / 1e6)
    assert [s.body["model"] for s in stack.upstreams["primary"].seen] == ["primary-model"]
    assert stack.upstreams["fallback"].seen == []


def test_every_field_passes_through_untouched(stack: Stack) -> None:
    tools = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object", "properties": {}}}}]
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}
    messages = [{"role": "user", "content": [{"type": "text", "text": "What is this?"}, image]}]
    completion = client(stack).chat.completions.create(
        model="chat", messages=messages, tools=tools, tool_choice="auto", seed=7, n=1, logprobs=True,
        response_format={"type": "text"}, extra_body={"future_field": {"nested": [1, 2]}, "top_k": 5})
    assert completion.choices[0].message.tool_calls[0].function.name == "weather"
    sent = stack.upstreams["primary"].seen[0].body
    assert sent["tools"] == tools
    assert sent["messages"] == messages
    assert (sent["seed"], sent["logprobs"], sent["top_k"]) == (7, True, 5)
    assert sent["future_field"] == {"nested": [1, 2]}
    assert sent["response_format"] == {"type": "text"}


def test_stream_arrives_whole_and_usage_is_stripped_when_not_asked(stack: Stack) -> None:
    with client(stack).chat.completions.with_streaming_response.create(model="chat", messages=HELLO,
                                                                       stream=True) as response:
        assert response.headers["x-switchyard-upstream"] == "primary"
        assert "x-switchyard-cost-usd" not in response.headers
        chunks = list(response.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("[primary]")
    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks)
    assert stack.upstreams["primary"].seen[0].body["stream_options"] == {"include_usage": True}


def test_stream_keeps_usage_when_the_client_asks(stack: Stack) -> None:
    chunks = list(client(stack).chat.completions.create(model="chat", messages=HELLO, stream=True,
                                                         stream_options={"include_usage": True}))
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 9


def test_stream_usage_counts_in_metrics(stack: Stack) -> None:
    list(client(stack).chat.completions.create(model="chat", messages=HELLO, stream=True))
    metrics = httpx.get(stack.served.url + "/metrics").text
    assert 'switchyard_tokens_total{tenant="acme",type="completion",upstream="primary"} 9.0' in metrics
    assert 'switchyard_time_to_first_token_seconds_count{route="chat",upstream="primary"} 1.0' in metrics


def test_async_client_and_completions_and_embeddings(stack: Stack) -> None:
    async def go() -> tuple[str, int]:
        async with openai.AsyncOpenAI(base_url=stack.base_url, api_key=KEY, max_retries=0) as aclient:
            completion = await aclient.completions.create(model="chat", prompt="Say hi")
            embedding = await aclient.embeddings.create(model="chat", input=["a", "b"])
            return completion.choices[0].text, len(embedding.data)

    text, count = asyncio.run(go())
    assert text.startswith("[primary]")
    assert count == 2
    assert [s.path for s in stack.upstreams["primary"].seen] == ["/v1/completions", "/v1/embeddings"]


def test_falls_back_to_the_next_candidate_on_5xx(stack: Stack) -> None:
    stack.upstreams["primary"].faults.extend([Fault(status=503), Fault(status=503)])
    raw = client(stack).chat.completions.with_raw_response.create(model="chat", messages=HELLO)
    assert raw.headers["x-switchyard-upstream"] == "fallback"
    assert raw.parse().model == "fallback-model"
    assert len(stack.upstreams["primary"].seen) == 2


def test_falls_back_when_the_first_candidate_refuses_connections(loop: Loop, tmp_path: Path) -> None:
    stack = _dead_first(loop, tmp_path)
    raw = client(stack).chat.completions.with_raw_response.create(model="chat", messages=HELLO)
    assert raw.headers["x-switchyard-upstream"] == "fallback"
    metrics = httpx.get(stack.served.url + "/metrics").text
    assert 'switchyard_upstream_errors_total{reason="connect",upstream="dead"} 2.0' in metrics


def _dead_first(loop: Loop, tmp_path: Path) -> Stack:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    fallback = StandIn("fallback")
    upstreams = {"dead": upstream_spec(f"http://127.0.0.1:{dead_port}"),
                 "fallback": upstream_spec(loop.serve(fallback).url, model="fallback-model")}
    path = write_policy(tmp_path, upstreams, {"chat": {"candidates": ["dead", "fallback"]}})
    gateway = Gateway(Settings(policy=str(path)))
    return Stack(gateway, loop.serve(gateway), {"fallback": fallback}, loop)


def test_client_errors_from_the_upstream_pass_through_without_fallback(stack: Stack) -> None:
    stack.upstreams["primary"].faults.append(Fault(status=422))
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        client(stack).chat.completions.create(model="chat", messages=HELLO)
    assert caught.value.response.headers["x-switchyard-upstream"] == "primary"
    assert stack.upstreams["fallback"].seen == []


def test_every_candidate_failing_gives_a_sanitized_502(stack: Stack) -> None:
    for name in ("primary", "fallback"):
        stack.upstreams[name].faults.extend([Fault(status=500), Fault(status=500)])
    with pytest.raises(openai.InternalServerError) as caught:
        client(stack).chat.completions.create(model="chat", messages=HELLO)
    error = caught.value.response.json()["error"]
    assert caught.value.status_code == 502
    assert error["code"] == "upstream_error"
    assert "primary: http_500" in error["message"]
    assert "Traceback" not in caught.value.response.text


def test_unknown_key_and_missing_key_are_401(stack: Stack) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        client(stack, key="sk-sy-nobody").chat.completions.create(model="chat", messages=HELLO)
    assert caught.value.response.json()["error"]["code"] == "invalid_api_key"
    response = httpx.post(stack.base_url + "/chat/completions", json={"model": "chat", "messages": HELLO})
    assert response.status_code == 401
    assert set(response.json()["error"]) == {"message", "type", "code", "param"}


def test_unknown_route_is_404_listing_the_allowed_ones(stack: Stack) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client(stack, key=OTHER_KEY).chat.completions.create(model="gpt-5", messages=HELLO)
    error = caught.value.response.json()["error"]
    assert (error["code"], error["param"]) == ("model_not_found", "model")
    assert "available: chat" in error["message"]


@pytest.mark.parametrize(("body", "param"), [
    (b"{not json", None),
    (b"[1, 2]", None),
    (b'{"messages": []}', "model"),
    (b'{"model": 3, "messages": []}', "model"),
    (b'{"model": "chat"}', "messages"),
    (b'{"model": "chat", "messages": "hi"}', "messages"),
    (b'{"model": "chat", "messages": [{"content": "x"}]}', "messages[0]"),
    (b'{"model": "chat", "messages": [{"role": "user", "content": 5}]}', "messages[0].content"),
    (b'{"model": "chat", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}', "stream"),
    (b'{"model": "chat", "messages": [{"role": "user", "content": "x"}], "max_tokens": -1}', "max_tokens"),
    (b'{"model": "chat", "messages": [{"role": "user", "content": "x"}], "tools": {}}', "tools"),
])
def test_bad_bodies_are_400_naming_the_param(stack: Stack, body: bytes, param: str | None) -> None:
    response = httpx.post(stack.base_url + "/chat/completions", content=body,
                          headers={"authorization": f"Bearer {KEY}", "content-type": "application/json"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", param)
    assert stack.upstreams["primary"].seen == []


def test_a_body_over_the_limit_is_413(loop: Loop, tmp_path: Path) -> None:
    stack = start_stack(loop, tmp_path, settings={"max_body_bytes": 1000})
    with pytest.raises(openai.APIStatusError) as caught:
        client(stack).chat.completions.create(model="chat", messages=[{"role": "user", "content": "x" * 2000}])
    assert caught.value.status_code == 413
    assert caught.value.response.json()["error"]["code"] == "request_too_large"


def test_wrong_method_and_unknown_path_are_json_errors(stack: Stack) -> None:
    assert httpx.get(stack.base_url + "/chat/completions").status_code == 405
    response = httpx.get(stack.base_url + "/nope")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_models_lists_the_routes_this_key_may_use(loop: Loop, tmp_path: Path) -> None:
    stack = start_stack(loop, tmp_path, models={"chat": {"candidates": ["primary"]},
                                                "big": {"candidates": ["fallback"]}})
    assert [m.id for m in client(stack).models.list()] == ["chat", "big"]
    assert [m.id for m in client(stack, key=OTHER_KEY).models.list()] == ["chat"]


def test_client_credentials_are_never_forwarded(loop: Loop, tmp_path: Path) -> None:
    stack = start_stack(loop, tmp_path, upstream_primary={"api_key": "sk-provider-secret"})
    client(stack, default_headers={"x-api-key": "leak", "cookie": "a=b", "x-request-id": "req-42"}).chat.completions \
        .create(model="chat", messages=HELLO)
    seen = stack.upstreams["primary"].seen[0].headers
    assert seen["authorization"] == "Bearer sk-provider-secret"
    assert "x-api-key" not in seen
    assert "cookie" not in seen
    assert seen["x-request-id"] == "req-42"


def test_a_provider_key_echoed_in_an_upstream_error_is_scrubbed(loop: Loop, tmp_path: Path) -> None:
    stack = start_stack(loop, tmp_path, names=("primary",), upstream_primary={"api_key": "primary"})
    stack.upstreams["primary"].faults.append(Fault(status=400))
    with pytest.raises(openai.BadRequestError) as caught:
        client(stack).chat.completions.create(model="chat", messages=HELLO)
    assert "primary: error" not in caught.value.response.text
    assert "[redacted]" in caught.value.response.text


def test_a_disconnecting_client_closes_the_upstream_request(stack: Stack) -> None:
    stack.upstreams["primary"].faults.append(Fault(delay_s=30))
    seen = stack.upstreams["primary"].seen
    with socket.create_connection(("127.0.0.1", stack.served.port)) as client:
        body = b'{"model": "chat", "messages": [{"role": "user", "content": "Hello"}]}'
        client.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer " + KEY.encode()
                       + b"\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
        wait_for(lambda: bool(seen), what="the request to reach the upstream")
    wait_for(lambda: seen[0].disconnected.is_set(), what="the upstream to see the client go")
    metrics_text = httpx.get(stack.served.url + "/metrics").text
    wait_for(lambda: 'status="499"' in httpx.get(stack.served.url + "/metrics").text, what="the 499 to be counted")
    assert "switchyard_inflight_requests" in metrics_text


def test_a_stream_cut_midway_ends_with_an_error_event_not_done(stack: Stack) -> None:
    stack.upstreams["primary"].faults.append(Fault(cut_after=3))
    with httpx.stream("POST", stack.base_url + "/chat/completions", headers={"authorization": f"Bearer {KEY}"},
                      json={"model": "chat", "messages": HELLO, "stream": True}) as response:
        body = response.read()
    assert b"[primary]" in body
    assert b"[DONE]" not in body
    assert b'"code":"stream_interrupted"' in body
    assert b'"finish_reason":"stop"' not in body
