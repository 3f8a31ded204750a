"""Translated upstreams end to end: the openai SDK, the gateway, litellm, and fake Anthropic and Gemini servers."""

from __future__ import annotations

import asyncio
import gc
import json
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from gateway.errors import UpstreamError, UpstreamStatus, UpstreamTimeout, UpstreamUnavailable
from gateway.pipeline.runtime import client_spec
from gateway.routing.policy.schema import Resilience, Upstream
from gateway.serving.app import Gateway, Settings
from gateway.tools.cli import main
from gateway.tools.standin import Fake, FakeAnthropic, FakeGemini, Fault, StandIn
from gateway.upstreams import litellm_adapter
from gateway.upstreams.answers import EventStream, Lifetimes
from gateway.upstreams.litellm_adapter import LitellmUpstream, knows, price
from gateway.upstreams.translate import DONE
from tests.conftest import Loop, upstream_spec, wait_for, write_policy

# litellm silences these pydantic warnings process-wide at import; pytest's "error" filter would revive them
pytestmark = pytest.mark.filterwarnings("ignore:.*`ReadOnly` qualifier:UserWarning")
ROOT = Path(__file__).resolve().parents[2]
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "The weather in a city.",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                          "required": ["city"]}}}]
PIXEL = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAA"
         "BJRU5ErkJggg==")
SCHEMA = {"type": "json_schema", "json_schema": {"name": "answer", "schema": {
    "type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"],
    "additionalProperties": False}}}
HI = [{"role": "user", "content": "Say hello."}]


def anthropic_spec(url: str, **extra: Any) -> dict[str, Any]:
    return {"kind": "anthropic", "model": "claude-sonnet-4-5", "base_url": url, "api_key": "test",
            "region": "us-east", "context_window": 200_000, "capabilities": ["tools", "json", "vision"], **extra}


def gemini_spec(url: str, **extra: Any) -> dict[str, Any]:
    return {"kind": "gemini", "model": "gemini-2.5-flash", "base_url": url + "/v1beta", "api_key": "test",
            "region": "us-east", "context_window": 1_000_000, "capabilities": ["tools", "json", "vision"], **extra}


@dataclass
class Stack:
    """A gateway in front of a fake Anthropic, a fake Gemini and a self-hosted stand-in."""

    loop: Loop
    url: str
    anthropic: FakeAnthropic
    gemini: FakeGemini
    standin: StandIn

    def client(self) -> openai.OpenAI:
        from tests.conftest import KEY

        return self.loop.client(self.url + "/v1", KEY)


def start(loop: Loop, folder: Path, candidates: list[str], specs: dict[str, dict[str, Any]] | None = None,
          **sections: Any) -> Stack:
    """The three upstreams (anthropic, gemini, self) and a route 'chat' over candidates, in that order."""
    fakes = FakeAnthropic("anthropic"), FakeGemini("gemini")
    standin = StandIn("self")
    urls = [loop.serve(app).url for app in (*fakes, standin)]
    upstreams = {"anthropic": anthropic_spec(urls[0]), "gemini": gemini_spec(urls[1]),
                 "self": upstream_spec(urls[2], model="self-model", context_window=8192)}
    for name, extra in (specs or {}).items():
        upstreams[name].update(extra)
    path = write_policy(folder, upstreams, {"chat": {"candidates": candidates}}, **sections)
    gateway = Gateway(Settings(policy=str(path)))
    return Stack(loop, loop.serve(gateway).url, fakes[0], fakes[1], standin)


def fake(stack: Stack, kind: str) -> Fake:
    return stack.anthropic if kind == "anthropic" else stack.gemini


def collect(stream: Any) -> tuple[str, str | None, Any, list[Any]]:
    """Text, finish reason, usage and tool-call deltas of a streamed answer."""
    text, finish, usage, calls = [], None, None, []
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            text.append(choice.delta.content or "")
            calls += choice.delta.tool_calls or []
            finish = choice.finish_reason or finish
    return "".join(text), finish, usage, calls


# -- text, streams, tools, JSON, images -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["anthropic", "gemini"])
def test_a_plain_answer_is_translated_with_usage_and_a_price_from_the_price_map(loop: Loop, tmp_path: Path,
                                                                                kind: str) -> None:
    stack = start(loop, tmp_path, [kind])
    raw = stack.client().chat.completions.with_raw_response.create(model="chat", messages=HI, max_tokens=64)
    answer = raw.parse()
    assert answer.choices[0].message.content == f"[{kind}] word0 word1 word2 word3 word4 word5 word6 word7 "
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None
    assert answer.usage.prompt_tokens > 0
    assert answer.usage.completion_tokens == 9
    listed = price(kind, "claude-sonnet-4-5" if kind == "anthropic" else "gemini-2.5-flash")
    per_in, per_out, *_ = listed or (0, 0)
    expected = answer.usage.prompt_tokens * per_in + answer.usage.completion_tokens * per_out
    assert float(raw.headers["x-switchyard-cost-usd"]) == pytest.approx(expected, rel=1e-6)
    assert expected > 0


def test_the_request_reaches_anthropic_in_its_own_format(loop: Loop, tmp_path: Path) -> None:
    stack = start(loop, tmp_path, ["anthropic"])
    messages = [{"role": "system", "content": "Be brief."}, *HI]
    stack.client().chat.completions.create(model="chat", messages=messages, max_tokens=64, temperature=0.2,
                                           stop=["END"], extra_headers={"traceparent": "00-abc-def-01"})
    seen = stack.anthropic.seen[-1]
    assert seen.path == "/v1/messages"
    assert seen.headers["x-api-key"] == "test"
    assert seen.headers["traceparent"] == "00-abc-def-01"
    assert seen.body["model"] == "claude-sonnet-4-5"
    assert seen.body["max_tokens"] == 64
    assert seen.body["system"] == [{"type": "text", "text": "Be brief."}]
    assert seen.body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Say hello."}]}]
    assert seen.body["temperature"] == 0.2
    assert seen.body["stop_sequences"] == ["END"]


@pytest.mark.parametrize("kind", ["anthropic", "gemini"])
@pytest.mark.parametrize("include_usage", [True, False])
def test_a_stream_is_complete_with_finish_reason_and_usage_when_asked(loop: Loop, tmp_path: Path, kind: str,
                                                                      include_usage: bool) -> None:
    stack = start(loop, tmp_path, [kind])
    options = {"include_usage": True} if include_usage else None
    stream = stack.client().chat.completions.create(model="chat", messages=HI, stream=True, stream_options=options)
    text, finish, usage, _ = collect(stream)
    assert text == f"[{kind}] word0 word1 word2 word3 word4 word5 word6 word7 "
    assert finish == "stop"
    assert (usage is not None) == include_usage
    if usage is not None:
        assert usage.completion_tokens == 9
        assert usage.total_tokens == usage.prompt_tokens + 9


@pytest.mark.parametrize("kind", ["anthropic", "gemini"])
def test_tool_calls_come_back_whole_and_as_streamed_deltas(loop: Loop, tmp_path: Path, kind: str) -> None:
    stack = start(loop, tmp_path, [kind])
    client = stack.client()
    answer = client.chat.completions.create(model="chat", messages=HI, tools=TOOLS, tool_choice="auto")
    call = answer.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert answer.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    assert call.id
    _, finish, _, deltas = collect(client.chat.completions.create(model="chat", messages=HI, tools=TOOLS, stream=True))
    assert finish == "tool_calls"
    assert deltas[0].id
    assert deltas[0].function.name == "get_weather"
    assert {d.index for d in deltas} == {0}
    assert json.loads("".join(d.function.arguments or "" for d in deltas)) == {"city": "Paris"}
    sent = fake(stack, kind).seen[-1].body
    assert "get_weather" in json.dumps(sent.get("tools"))


def test_a_tool_result_goes_back_to_anthropic_as_a_tool_result_block(loop: Loop, tmp_path: Path) -> None:
    stack = start(loop, tmp_path, ["anthropic"])
    call = {"id": "toolu_01", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}
    messages = [*HI, {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "toolu_01", "content": "sunny"}]
    stack.client().chat.completions.create(model="chat", messages=messages, tools=TOOLS, tool_choice="none")
    turns = stack.anthropic.seen[-1].body["messages"]
    assert turns[1]["content"][0]["type"] == "tool_use"
    assert turns[2]["content"][0] == {"type": "tool_result", "tool_use_id": "toolu_01", "content": "sunny"}


@pytest.mark.parametrize("kind", ["anthropic", "gemini"])
@pytest.mark.parametrize("stream", [False, True])
def test_response_format_json_schema_is_answered_in_json(loop: Loop, tmp_path: Path, kind: str, stream: bool) -> None:
    stack = start(loop, tmp_path, [kind])
    client = stack.client()
    if stream:
        text, *_ = collect(client.chat.completions.create(model="chat", messages=HI, response_format=SCHEMA,
                                                          stream=True))
    else:
        text = client.chat.completions.create(model="chat", messages=HI, response_format=SCHEMA)\
            .choices[0].message.content or ""
    assert json.loads(text) == {"answer": kind}
    sent = fake(stack, kind).seen[-1].body
    if kind == "anthropic":
        assert sent["output_format"]["schema"]["properties"] == {"answer": {"type": "string"}}
    else:
        assert sent["generationConfig"]["response_mime_type"] == "application/json"


@pytest.mark.parametrize("kind", ["anthropic", "gemini"])
def test_an_image_part_is_sent_as_the_providers_image(loop: Loop, tmp_path: Path, kind: str) -> None:
    stack = start(loop, tmp_path, [kind])
    messages = [{"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                             {"type": "image_url", "image_url": {"url": PIXEL}}]}]
    text, *_ = collect(stack.client().chat.completions.create(model="chat", messages=messages, stream=True))
    assert text.startswith(f"[{kind}] saw 1 image(s)")
    parts = fake(stack, kind).seen[-1].body
    if kind == "anthropic":
        image = parts["messages"][0]["content"][1]
        assert image["type"] == "image"
        assert image["source"]["media_type"] == "image/png"
    else:
        assert parts["contents"][0]["parts"][1]["inline_data"]["mime_type"] == "image/png"


# -- errors, retries and fallback -----------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_a_429_is_retried_after_the_time_anthropic_asks(loop: Loop, tmp_path: Path, stream: bool) -> None:
    stack = start(loop, tmp_path, ["anthropic", "self"])
    stack.anthropic.faults.append(Fault(status=429, retry_after="1"))
    started = time.monotonic()
    if stream:
        text, *_ = collect(stack.client().chat.completions.create(model="chat", messages=HI, stream=True))
    else:
        text = stack.client().chat.completions.create(model="chat", messages=HI).choices[0].message.content or ""
    assert text.startswith("[anthropic]")
    assert time.monotonic() - started >= 1.0
    assert len(stack.anthropic.seen) == 2
    assert not stack.standin.seen


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_overloaded_falls_back_to_the_next_candidate(loop: Loop, tmp_path: Path, stream: bool) -> None:
    stack = start(loop, tmp_path, ["anthropic", "gemini"], resilience={"attempts_per_upstream": 1, "deadline_s": 20})
    stack.anthropic.faults.append(Fault(status=529))
    if stream:
        text, *_ = collect(stack.client().chat.completions.create(model="chat", messages=HI, stream=True))
    else:
        text = stack.client().chat.completions.create(model="chat", messages=HI).choices[0].message.content or ""
    assert text.startswith("[gemini]")
    assert len(stack.anthropic.seen) == 1


def test_a_prompt_too_long_for_anthropic_moves_to_a_larger_window(loop: Loop, tmp_path: Path) -> None:
    specs = {"anthropic": {"context_window": 4000}, "gemini": {"context_window": 1_000_000}}
    stack = start(loop, tmp_path, ["anthropic", "gemini"], specs)
    stack.anthropic.context_limit = 600
    long = [{"role": "user", "content": "tell me more " * 80}]
    text, finish, *_ = collect(stack.client().chat.completions.create(model="chat", messages=long, stream=True))
    assert text.startswith("[gemini]")
    assert finish == "stop"
    assert len(stack.anthropic.seen) == 1  # context length is not retried on the same upstream


def test_a_bad_request_is_passed_to_the_client_in_openais_shape(loop: Loop, tmp_path: Path) -> None:
    stack = start(loop, tmp_path, ["anthropic", "gemini"])
    stack.anthropic.faults.append(Fault(status=400, message="messages: roles must alternate"))
    with pytest.raises(openai.BadRequestError) as caught:
        stack.client().chat.completions.create(model="chat", messages=HI)
    assert caught.value.status_code == 400
    assert "roles must alternate" in caught.value.message
    assert not stack.gemini.seen


def test_a_rejected_key_falls_back(loop: Loop, tmp_path: Path) -> None:
    stack = start(loop, tmp_path, ["anthropic", "gemini"])
    stack.anthropic.faults.append(Fault(status=401))
    answer = stack.client().chat.completions.create(model="chat", messages=HI)
    assert (answer.choices[0].message.content or "").startswith("[gemini]")


def test_a_stream_cut_mid_answer_ends_with_an_error_event_not_a_false_done(loop: Loop, tmp_path: Path) -> None:
    stack = start(loop, tmp_path, ["anthropic"])
    stack.anthropic.faults.append(Fault(cut_after=3))
    stream = stack.client().chat.completions.create(model="chat", messages=HI, stream=True)
    with pytest.raises(openai.APIError, match="incomplete"):
        collect(stream)


# -- the judged scenario: a proprietary API as the fallback of a self-hosted model -----------------------------


@pytest.mark.parametrize("fallback", ["anthropic", "gemini"])
@pytest.mark.parametrize("self_hosted", ["up", "failing", "down"])
def test_the_openai_sdk_streams_a_whole_answer_from_self_hosted_or_its_fallback(loop: Loop, tmp_path: Path,
                                                                                 fallback: str,
                                                                                 self_hosted: str) -> None:
    specs = {"self": {"base_url": "http://127.0.0.1:9/v1"}} if self_hosted == "down" else {}
    stack = start(loop, tmp_path, ["self", fallback], specs)
    if self_hosted == "failing":
        stack.standin.faults.extend([Fault(status=503), Fault(status=503)])
    stream = stack.client().chat.completions.create(model="chat", messages=HI, stream=True,
                                                    stream_options={"include_usage": True})
    text, finish, usage, _ = collect(stream)
    who = "self" if self_hosted == "up" else fallback
    assert text.startswith(f"[{who}]")
    assert text.rstrip().endswith("word7")
    assert finish == "stop"
    assert usage is not None
    assert usage.completion_tokens > 0


# -- the adapter on its own: error mapping, timeouts, the fast path ---------------------------------------------


Make = Callable[..., LitellmUpstream]


@pytest.fixture
def adapter(loop: Loop) -> Iterator[Make]:
    """Makes adapters (url, kind, resilience), each closed after the test."""
    made: list[LitellmUpstream] = []

    def make(url: str, kind: str = "anthropic", **resilience: Any) -> LitellmUpstream:
        spec = Upstream.model_validate(anthropic_spec(url) if kind == "anthropic" else gemini_spec(url))
        made.append(LitellmUpstream("up", client_spec(spec, Resilience(**resilience))))
        return made[-1]

    yield make
    for upstream in made:
        loop.run(upstream.aclose())


async def exchange_text(upstream: LitellmUpstream, stream: bool, messages: list[dict[str, Any]] = HI) -> bytes:
    body = upstream.encode({"model": "chat", "messages": messages}, stream)
    exchange = await upstream.send("/chat/completions", body, {}, stream)
    try:
        return b"".join([chunk async for chunk in exchange.chunks()])
    finally:
        exchange.close()


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(("kind", "fault", "status", "error_kind", "retry_after"), [
    ("anthropic", Fault(status=429, retry_after="7"), 429, None, "7"),
    ("anthropic", Fault(status=529), 529, None, None),
    ("anthropic", Fault(status=500), 500, None, None),
    ("anthropic", Fault(status=401), 401, None, None),
    ("anthropic", Fault(status=400, message="prompt is too long: 300000 tokens > 200000 maximum"), 400,
     "context_length", None),
    ("anthropic", Fault(status=400, message="Output blocked by content filtering policy"), 400, "content_filter",
     None),
    ("anthropic", Fault(status=400, message="bad"), 400, None, None),
    ("gemini", Fault(status=429, retry_after="3"), 429, None, "3"),
    ("gemini", Fault(status=503), 503, None, None),
    ("gemini", Fault(status=400, message="The input token count (9) exceeds the maximum number of tokens allowed"),
     400, "context_length", None),
])
def test_litellm_errors_become_upstream_statuses(loop: Loop, adapter: Make, kind: str, fault: Fault, status: int,
                                                 error_kind: str | None, retry_after: str | None,
                                                 stream: bool) -> None:
    server = FakeAnthropic("anthropic") if kind == "anthropic" else FakeGemini("gemini")
    server.faults.append(fault)
    upstream = adapter(loop.serve(server).url, kind)
    with pytest.raises(UpstreamStatus) as caught:
        loop.run(exchange_text(upstream, stream))
    error = caught.value
    assert (error.status, error.kind, error.retry_after) == (status, error_kind, retry_after)
    assert error.retryable == (status >= 500 or status == 429)
    assert json.loads(error.body)["error"]["message"]
    assert b"litellm" not in error.body


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("kind", ["anthropic", "gemini"])
def test_a_refused_connection_is_unavailable(loop: Loop, adapter: Make, kind: str, stream: bool) -> None:
    upstream = adapter("http://127.0.0.1:9", kind)
    with pytest.raises(UpstreamUnavailable):
        loop.run(exchange_text(upstream, stream))


@pytest.mark.parametrize("stream", [False, True])
def test_an_upstream_slower_than_the_try_timeout_is_a_timeout(loop: Loop, adapter: Make, stream: bool) -> None:
    server = FakeAnthropic("anthropic")
    server.faults.append(Fault(delay_s=2))
    upstream = adapter(loop.serve(server).url, per_try_timeout_s=0.3, stream_idle_timeout_s=0.3)
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout):
        loop.run(exchange_text(upstream, stream))
    assert time.monotonic() - started < 1.5


def test_a_try_given_up_before_it_is_sent_never_reaches_the_upstream_and_leaves_nothing_unawaited(
        loop: Loop, adapter: Make) -> None:
    server = FakeAnthropic("anthropic")
    upstream = adapter(loop.serve(server).url, per_try_timeout_s=0.001)  # passes while litellm translates

    async def given_up() -> None:
        with pytest.raises(UpstreamTimeout):
            await exchange_text(upstream, False)
        await upstream.aclose()  # returns once the given-up call has ended, refused by the transport
        await asyncio.get_running_loop().shutdown_default_executor()  # litellm's translating thread is done

    loop.run(given_up())
    gc.collect()  # a coroutine dropped unawaited would warn now, and pytest's warnings are errors
    assert server.seen == []


def test_an_adapter_closes_its_client_only_once_its_open_stream_ends(loop: Loop, adapter: Make) -> None:
    upstream = adapter(loop.serve(FakeAnthropic("anthropic")).url)

    async def stream_while_closing() -> tuple[bool, bytes, bool]:
        exchange = await upstream.send("/chat/completions", upstream.encode({"messages": HI}, True), {}, True)
        closing = asyncio.create_task(upstream.aclose())
        text = b"".join([chunk async for chunk in exchange.chunks()])  # read while aclose waits
        before = upstream.closed
        await asyncio.wait_for(closing, 10)
        return before, text, upstream.closed

    before, text, after = loop.run(stream_while_closing())
    assert text.endswith(DONE)
    assert (before, after) == (False, True)


def test_a_reload_closes_the_old_translated_clients(loop: Loop, tmp_path: Path) -> None:
    server = FakeAnthropic("anthropic")
    path = write_policy(tmp_path, {"anthropic": anthropic_spec(loop.serve(server).url)},
                        {"chat": {"candidates": ["anthropic"]}})
    gateway = Gateway(Settings(policy=str(path)))
    client = loop.client(loop.serve(gateway).url + "/v1")
    assert client.chat.completions.create(model="chat", messages=HI).choices[0].message.content
    assert gateway.runtime is not None
    assert gateway.reloader is not None
    old = gateway.runtime.upstreams["anthropic"]
    doc = yaml.safe_load(path.read_text())
    doc["models"]["chat"]["default_max_tokens"] = 64
    path.write_text(yaml.safe_dump(doc))
    loop.loop.call_soon_threadsafe(gateway.reloader.request)
    wait_for(lambda: isinstance(old, LitellmUpstream) and old.closed, what="the old client closed")
    assert client.chat.completions.create(model="chat", messages=HI).choices[0].message.content
    assert len(server.seen) == 2


@pytest.mark.parametrize("kind", ["anthropic", "gemini"])
def test_a_stream_always_ends_with_usage_for_the_gateway_to_bill(loop: Loop, adapter: Make, kind: str) -> None:
    server = FakeAnthropic("anthropic") if kind == "anthropic" else FakeGemini("gemini")
    upstream = adapter(loop.serve(server).url, kind)
    text = loop.run(exchange_text(upstream, True))  # the client asked for no usage
    usage = [json.loads(line[6:])["usage"] for line in text.split(b"\n\n") if b'"usage"' in line]
    assert usage[-1]["completion_tokens"] > 0
    assert text.endswith(DONE)


def test_shutdown_closes_the_translated_clients(loop: Loop, tmp_path: Path) -> None:
    path = write_policy(tmp_path, {"anthropic": anthropic_spec(loop.serve(FakeAnthropic("anthropic")).url)},
                        {"chat": {"candidates": ["anthropic"]}})
    gateway = Gateway(Settings(policy=str(path)))
    served = loop.serve(gateway)
    assert loop.client(served.url + "/v1").chat.completions.create(model="chat", messages=HI).choices
    assert gateway.runtime is not None
    upstream = gateway.runtime.upstreams["anthropic"]
    assert isinstance(upstream, LitellmUpstream)
    assert not upstream.closed
    loop.stop(served)
    assert upstream.closed


def test_a_cut_stream_raises_unavailable_from_chunks(loop: Loop, adapter: Make) -> None:
    server = FakeAnthropic("anthropic")
    server.faults.append(Fault(cut_after=2))
    upstream = adapter(loop.serve(server).url)
    with pytest.raises(UpstreamUnavailable):
        loop.run(exchange_text(upstream, True))


def test_only_chat_completions_are_translated(loop: Loop, adapter: Make) -> None:
    upstream = adapter(loop.serve(FakeAnthropic("anthropic")).url)

    async def embeddings() -> None:
        await upstream.send("/embeddings", b'{"input": "x"}', {}, False)

    with pytest.raises(UpstreamStatus) as caught:
        loop.run(embeddings())
    assert caught.value.status == 404


@pytest.mark.parametrize("kind", ["anthropic", "gemini"])
def test_known_streams_take_the_fast_path(loop: Loop, adapter: Make, kind: str) -> None:
    server = FakeAnthropic("anthropic") if kind == "anthropic" else FakeGemini("gemini")
    upstream = adapter(loop.serve(server).url, kind)

    async def opened() -> str:
        exchange = await upstream.send("/chat/completions", upstream.encode({"messages": HI}, True), {}, True)
        name = exchange._frames.__name__  # type: ignore[union-attr]
        exchange.close()
        return str(name)

    assert loop.run(opened()) == "translated"  # litellm's internals moved if this fails: streams got slow


def test_streams_the_adapter_does_not_read_go_through_litellms_wrapper(loop: Loop) -> None:
    server = FakeAnthropic("anthropic")
    spec = Upstream.model_validate(anthropic_spec(loop.serve(server).url, model="claude-3-haiku-20240307"))
    upstream = LitellmUpstream("up", client_spec(spec, Resilience()))
    body = upstream.encode({"messages": HI, "response_format": SCHEMA}, True)  # a forced JSON tool on this model

    async def events() -> list[Any]:
        exchange = await upstream.send("/chat/completions", body, {}, True)
        assert exchange._frames.__name__ == "wrapped"  # type: ignore[union-attr]
        raw = await exchange.read()
        await upstream.aclose()
        assert raw.endswith(b"data: [DONE]\n\n")
        return [json.loads(event[6:]) for event in raw.split(b"\n\n") if event.startswith(b"data: {")]

    chunks = loop.run(events())
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert json.loads(text) == {"answer": "anthropic"}
    assert chunks[-1]["usage"]["completion_tokens"] > 0
    assert server.seen[-1].body["tool_choice"] == {"name": "json_tool_call", "type": "tool"}


def test_errors_from_chunks_are_only_cuts(loop: Loop) -> None:
    exchange = EventStream("up", _failing(), _nothing, Lifetimes(), litellm_adapter.stream_errors)

    async def read() -> None:
        async for _ in exchange.chunks():
            pass

    with pytest.raises(UpstreamError) as caught:
        loop.run(read())
    assert isinstance(caught.value, UpstreamUnavailable | UpstreamTimeout)


async def _failing() -> Any:
    yield b"data: {}\n\n"
    from litellm import exceptions

    raise exceptions.RateLimitError("slow down", "anthropic", "claude")


async def _nothing() -> None:
    return None


# -- catalog: kinds and prices --------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "known"), [("anthropic", True), ("gemini", True), ("vertex_ai", True),
                                             ("bedrock", True), ("azure", True), ("no_such_provider", False)])
def test_kinds_are_litellms_provider_names(kind: str, known: bool) -> None:
    assert knows(kind) is known


def test_prices_come_from_the_bundled_price_map() -> None:
    assert price("anthropic", "claude-sonnet-4-5") == (3e-06, 1.5e-05, 3e-07, 3.75e-06, 6e-06)  # with its cache prices
    assert price("gemini", "gemini-2.5-flash") is not None  # listed as gemini/gemini-2.5-flash
    assert price("anthropic", "claude-imaginary-9") is None


def test_a_cache_price_the_map_does_not_list_is_the_input_price() -> None:
    listed = price("openai", "gpt-4o")  # the map lists a cache-read price for gpt-4o, and no cache-write price
    assert listed is not None
    per_in, _, read, write, write_1h = listed
    assert read < per_in
    assert write == write_1h == per_in  # and no one-hour price: the write price


def test_an_unprefixed_entry_prices_only_its_own_provider() -> None:
    assert price("openai", "gpt-4o") is not None
    assert price("deepseek", "gpt-4o") is None


def test_policy_check_names_where_a_price_comes_from(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    upstreams = {"claude": anthropic_spec("http://127.0.0.1:9"), "self": upstream_spec("http://127.0.0.1:9")}
    path = write_policy(tmp_path, upstreams, {"chat": {"candidates": ["self", "claude"]}})
    assert main(["policy", "check", str(path)]) == 0
    out = capsys.readouterr().out
    assert ("upstream claude (anthropic): price from the litellm price map: $3.0000 in, $15.0000 out, "
            "$0.3000 cache read, $3.7500 cache write, $6.0000 one-hour cache write per Mtok") in out
    assert "upstream self (openai): price from the policy" in out


def test_policy_check_refuses_an_upstream_with_no_price_anywhere(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    upstreams = {"claude": anthropic_spec("http://127.0.0.1:9", model="claude-imaginary-9")}
    path = write_policy(tmp_path, upstreams, {"chat": {"candidates": ["claude"]}})
    assert main(["policy", "check", str(path)]) == 1
    err = capsys.readouterr().err
    assert "upstreams.claude.cost" in err
    assert "claude-imaginary-9" in err


# -- isolation: lazy import, no network at import, no callbacks ----------------------------------------------


def run_python(code: str, *args: str) -> str:
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def test_an_openai_only_gateway_never_imports_litellm(tmp_path: Path) -> None:
    code = """
import sys
from pathlib import Path
from tests.conftest import Loop, start_stack
loop = Loop()
stack = start_stack(loop, Path(sys.argv[1]))
answer = stack.client().chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}])
assert answer.choices[0].message.content
loaded = sorted(name for name in sys.modules if name.split(".")[0] == "litellm" or name.endswith("litellm_adapter"))
loop.close()
print(loaded)
"""
    assert run_python(code, str(tmp_path)) == "[]"


def test_the_adapter_imports_litellm_at_first_use_offline_and_sets_no_callbacks() -> None:
    code = """
import json, os, socket
attempts = []
def refuse(*args, **kwargs):
    attempts.append(repr(args)[:80])
    raise OSError("no network in this test")
socket.socket.connect = refuse
socket.socket.connect_ex = refuse
socket.getaddrinfo = refuse
import sys
environment = dict(os.environ)
from gateway.upstreams import litellm_adapter
imported = {"litellm": "litellm" in sys.modules, "environment": dict(os.environ) != environment}
assert litellm_adapter.knows("anthropic") and litellm_adapter.price("anthropic", "claude-sonnet-4-5")
import litellm
callbacks = [litellm.callbacks, litellm.success_callback, litellm.failure_callback, litellm.input_callback,
             litellm._async_success_callback, litellm._async_failure_callback]
print(json.dumps({"attempts": attempts, "callbacks": sum(len(c) for c in callbacks), "at_import": imported,
                  "local_cost_map": os.environ["LITELLM_LOCAL_MODEL_COST_MAP"]}))
"""
    report = json.loads(run_python(code))
    assert report == {"attempts": [], "callbacks": 0, "at_import": {"litellm": False, "environment": False},
                      "local_cost_map": "True"}


def test_no_other_module_imports_litellm() -> None:
    imports = re.compile(r"^\s*(?:import litellm|from litellm[ .])", re.MULTILINE)
    importers = [str(path.relative_to(ROOT)) for path in (ROOT / "gateway").rglob("*.py")
                 if imports.search(path.read_text())]
    assert importers == ["gateway/upstreams/litellm_adapter.py"]
