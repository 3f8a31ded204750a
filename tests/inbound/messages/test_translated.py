"""Messages requests through a chat completions client, against a fault server on loopback: out and back again."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from gateway.errors import UpstreamCut, UpstreamIncomplete, UpstreamMalformed
from gateway.inbound.messages.translated import CHAT_PATH, EVENT_STREAM, JSON, TranslatedUpstream
from gateway.pipeline.runtime import client_spec
from gateway.routing.policy.schema import Resilience, Upstream
from gateway.tools.standin import Behaviour, FaultServer, Flood, Json, Sse, chat_events
from gateway.upstreams.http import Pool
from gateway.upstreams.openai import OpenAIUpstream

MESSAGES = {"model": "chat", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
async def pool() -> AsyncIterator[Pool]:
    made = Pool()
    yield made
    await made.close()


class Dropped:
    """What the translation told of the fields it dropped."""

    def __init__(self) -> None:
        self.told: list[tuple[str, set[str]]] = []

    def __call__(self, upstream: str, fields: set[str]) -> None:
        self.told.append((upstream, fields))


async def translated(pool: Pool, *script: Behaviour,
                     **spec: Any) -> tuple[TranslatedUpstream, FaultServer, Dropped]:
    server = FaultServer("chat", script)
    await server.start()
    doc = {"base_url": server.url + "/v1", "model": "served-model", **spec}
    inner = OpenAIUpstream("chatty", client_spec(Upstream.model_validate(doc), Resilience()), pool)
    dropped = Dropped()
    return TranslatedUpstream(inner, dropped), server, dropped


async def test_a_whole_answer_goes_out_as_chat_and_comes_back_as_a_message(pool: Pool) -> None:
    upstream, server, _ = await translated(pool, Json(content="Hello there"))
    try:
        exchange = await upstream.send("/v1/messages", upstream.encode(MESSAGES, False), {}, False)
        message = orjson.loads(await exchange.read())
    finally:
        await server.stop()
    assert (exchange.status, exchange.content_type, exchange.upstream) == (200, JSON, "chatty")
    assert server.arrivals[0].path == "/v1" + CHAT_PATH
    assert server.arrivals[0].body["model"] == "served-model"
    assert server.arrivals[0].body["messages"] == [{"role": "user", "content": "hi"}]
    assert (message["type"], message["role"], message["stop_reason"]) == ("message", "assistant", "end_turn")
    assert message["content"] == [{"type": "text", "text": "Hello there"}]
    assert (message["usage"]["input_tokens"], message["usage"]["output_tokens"]) == (7, 3)


async def test_a_stream_comes_back_as_message_events_ending_in_message_stop(pool: Pool) -> None:
    upstream, server, _ = await translated(pool, Sse(chat_events("m", ["Hel", "lo"])))
    try:
        exchange = await upstream.send("/v1/messages", upstream.encode({**MESSAGES, "stream": True}, True), {}, True)
        events = b"".join([piece async for piece in exchange.chunks()])
    finally:
        await server.stop()
    assert exchange.content_type == EVENT_STREAM
    kinds = [line[len(b"event: "):] for line in events.split(b"\n") if line.startswith(b"event: ")]
    assert kinds[0] == b"message_start"
    assert kinds[-1] == b"message_stop"
    text = "".join(orjson.loads(line[6:])["delta"].get("text", "") for line in events.split(b"\n")
                   if line.startswith(b"data: ") and b'"content_block_delta"' in line)
    assert text == "Hello"


async def test_a_stream_that_ends_unfinished_is_incomplete(pool: Pool) -> None:
    upstream, server, _ = await translated(pool, Sse(chat_events("m", ["Hel"], finish=False, with_usage=False)))
    try:
        exchange = await upstream.send("/v1/messages", upstream.encode({**MESSAGES, "stream": True}, True), {}, True)
        with pytest.raises(UpstreamIncomplete):
            async for _ in exchange.chunks():
                pass
    finally:
        await server.stop()


async def test_an_error_event_mid_stream_is_a_cut(pool: Pool) -> None:
    error = b'data: {"error": {"message": "overloaded", "type": "server_error"}}\n\n'
    upstream, server, _ = await translated(pool, Sse((*chat_events("m", ["Hel"], finish=False), error)))
    try:
        exchange = await upstream.send("/v1/messages", upstream.encode({**MESSAGES, "stream": True}, True), {}, True)
        with pytest.raises(UpstreamCut, match="error event"):
            async for _ in exchange.chunks():
                pass
    finally:
        await server.stop()


async def test_a_whole_answer_that_is_not_json_is_malformed(pool: Pool) -> None:
    upstream, server, _ = await translated(pool, Flood(size=100, fill=b"<"))
    try:
        exchange = await upstream.send("/v1/messages", upstream.encode(MESSAGES, False), {}, False)
        with pytest.raises(UpstreamMalformed, match="not JSON"):
            await exchange.read()
    finally:
        await server.stop()


async def test_top_k_goes_only_to_self_hosted_openai_servers_and_dropped_fields_are_told(
        pool: Pool) -> None:
    body = {**MESSAGES, "top_k": 5, "thinking": {"type": "enabled", "budget_tokens": 1000}}
    hosted, hosted_server, hosted_dropped = await translated(pool, hosting="self")
    third, third_server, third_dropped = await translated(pool)
    await hosted_server.stop()
    await third_server.stop()
    assert orjson.loads(hosted.encode(body, False))["top_k"] == 5
    assert "top_k" not in orjson.loads(third.encode(body, False))
    assert hosted_dropped.told == [("chatty", {"thinking"})]
    assert third_dropped.told == [("chatty", {"thinking", "top_k"})]
    assert (hosted.name, hosted.spec.hosting) == ("chatty", "self")
