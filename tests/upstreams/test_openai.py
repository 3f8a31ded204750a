"""The OpenAI-compatible client against fault servers on loopback: what it sends, and what each answer becomes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from gateway.errors import UpstreamCut, UpstreamRedirect, UpstreamStatus, UpstreamUnavailable
from gateway.pipeline.runtime import client_spec
from gateway.routing.policy.schema import Resilience, Upstream
from gateway.tools.standin import Behaviour, FaultServer, Json, Redirect, Reset, Sse, Status, chat_events
from gateway.upstreams.http import Pool
from gateway.upstreams.openai import Exchange, OpenAIUpstream, wrapped

PROVIDER_KEY = "sk-provider-0123456789abcdef0123456789"
BODY = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
async def pool() -> AsyncIterator[Pool]:
    made = Pool()
    yield made
    await made.close()


async def upstream(pool: Pool, *script: Behaviour, **spec: Any) -> tuple[OpenAIUpstream,
                                                                                                FaultServer]:
    server = FaultServer("f", script)
    await server.start()
    doc = {"base_url": server.url + "/v1", "model": "real-model", "region": "eu", "api_key": PROVIDER_KEY,
           "cost": {"input_per_mtok": 1, "output_per_mtok": 1}, **spec}
    return OpenAIUpstream("f", client_spec(Upstream.model_validate(doc), Resilience()), pool), server


async def drain(exchange: Exchange) -> list[bytes]:
    return [piece async for piece in exchange.chunks()]


def test_encode_names_the_upstreams_model_and_asks_a_stream_for_usage() -> None:
    spec = client_spec(Upstream.model_validate({"base_url": "http://x/v1", "model": "real-model", "region": "eu"}),
                       Resilience())
    client = OpenAIUpstream("f", spec, None)  # type: ignore[arg-type]  # encode sends nothing
    assert orjson.loads(client.encode(BODY, stream=False)) == {**BODY, "model": "real-model"}
    streamed = orjson.loads(client.encode({**BODY, "stream_options": {"x": 1}}, stream=True))
    assert streamed["stream_options"] == {"x": 1, "include_usage": True}
    assert "stream_options" not in orjson.loads(client.encode({"model": "m", "input": "hi"}, stream=True))


async def test_a_cookie_an_upstream_sets_is_never_sent_back(pool: Pool) -> None:
    """By host name (a cookie jar keeps none of IP addresses): the pool is every tenant's, so a cookie set in
    an answer to one would go with the next tenant's request."""
    server = FaultServer("f", [Json(headers=(("set-cookie", "session=tenant-a; Path=/; Max-Age=3600"),)), Json()])
    await server.start()
    doc = {"base_url": f"http://localhost:{server.port}/v1", "model": "m", "region": "eu",
           "cost": {"input_per_mtok": 1, "output_per_mtok": 1}}
    client = OpenAIUpstream("f", client_spec(Upstream.model_validate(doc), Resilience()), pool)
    try:
        for _ in range(2):
            exchange = await client.send("/chat/completions", client.encode(BODY, False), {}, stream=False)
            await exchange.read()
            exchange.close()
    finally:
        await server.stop()
    assert server.count == 2
    assert "cookie" not in server.arrivals[1].headers


async def test_it_sends_the_key_and_only_the_forwarded_headers(pool: Pool) -> None:
    client, server = await upstream(pool, Json(content="hello"), forward_headers=["x-tenant-hint"])
    try:
        exchange = await client.send("/chat/completions", client.encode(BODY, False),
                                     {"x-request-id": "r1", "x-tenant-hint": "a", "cookie": "c"}, stream=False)
        answer = orjson.loads(await exchange.read())
        exchange.close()
    finally:
        await server.stop()
    assert answer["choices"][0]["message"]["content"] == "hello"
    seen = server.arrivals[0]
    assert (seen.path, seen.body["model"]) == ("/v1/chat/completions", "real-model")
    assert seen.headers["authorization"] == f"Bearer {PROVIDER_KEY}"
    assert (seen.headers["x-request-id"], seen.headers["x-tenant-hint"]) == ("r1", "a")
    assert "cookie" not in seen.headers
    assert seen.headers["user-agent"] == "switchyard"
    assert seen.headers["host"].startswith("127.0.0.1:")


async def test_an_error_status_keeps_its_body_kind_and_retry_after_with_the_key_cut_out(
        pool: Pool) -> None:
    client, server = await upstream(pool, Status(429, f"slow down, {PROVIDER_KEY}", retry_after="5"))
    try:
        with pytest.raises(UpstreamStatus) as failed:
            await client.send("/chat/completions", b"{}", {}, stream=False)
    finally:
        await server.stop()
    assert (failed.value.status, failed.value.retry_after, failed.value.retryable) == (429, "5", True)
    assert PROVIDER_KEY.encode() not in failed.value.body
    assert orjson.loads(failed.value.body)["error"]["message"].startswith("slow down, ")


async def test_a_refusal_of_the_request_itself_is_not_retried(pool: Pool) -> None:
    client, server = await upstream(pool, Status(400, "This model's maximum context length is 8192 tokens"))
    try:
        with pytest.raises(UpstreamStatus) as failed:
            await client.send("/chat/completions", b"{}", {}, stream=False)
    finally:
        await server.stop()
    assert (failed.value.kind, failed.value.retryable) == ("context_length", False)


async def test_a_redirect_is_never_followed(pool: Pool) -> None:
    client, server = await upstream(pool, Redirect(307, "http://127.0.0.1:9/v1/chat/completions"))
    try:
        with pytest.raises(UpstreamRedirect):
            await client.send("/chat/completions", b"{}", {}, stream=False)
    finally:
        await server.stop()
    assert server.count == 1


async def test_a_reset_before_any_answer_is_unavailable(pool: Pool) -> None:
    client, server = await upstream(pool, Reset())
    try:
        with pytest.raises(UpstreamUnavailable) as failed:
            await client.send("/chat/completions", b"{}", {}, stream=False)
    finally:
        await server.stop()
    assert not isinstance(failed.value, UpstreamCut)


async def test_a_stream_comes_in_whole_events_and_a_reset_mid_stream_is_a_cut(pool: Pool) -> None:
    events = chat_events("m", ["a ", "b ", "c "])
    client, server = await upstream(pool, Sse(events, together=True), Sse(events, cut_after=2, reset=True))
    try:
        exchange = await client.send("/chat/completions", b"{}", {}, stream=True)
        whole = await drain(exchange)
        exchange.close()
        cut = await client.send("/chat/completions", b"{}", {}, stream=True)
        with pytest.raises(UpstreamCut):
            await drain(cut)
        cut.close()
    finally:
        await server.stop()
    assert b"".join(whole).endswith(b"data: [DONE]\n\n")
    assert all(piece.endswith(b"\n\n") for piece in whole)


@pytest.mark.parametrize(("content_type", "body", "more", "says"), [
    (b"text/html", b"<html><body><h1>502 Bad Gateway</h1></body></html>", False,
     "upstream 'f' answered 502 with a text/html body: 502 Bad Gateway"),
    (b"", b"", False, "upstream 'f' answered 502 with a no content type body: (empty)"),
    (b"text/plain; charset=utf-8", b"x" * 10, True,
     "upstream 'f' answered 502 with a text/plain body (cut at the error body limit): xxxxxxxxxx"),
])
def test_an_error_body_that_is_not_openais_becomes_one_with_an_excerpt(content_type: bytes, body: bytes, more: bool,
                                                                       says: str) -> None:
    error = orjson.loads(wrapped("f", 502, content_type, body, more))["error"]
    assert error["message"] == says
    assert (error["type"], error["code"]) == ("server_error", "upstream_http_502")


def test_a_4xx_wrapped_is_the_clients_error() -> None:
    assert orjson.loads(wrapped("f", 404, b"text/plain", b"no", False))["error"]["type"] == "invalid_request_error"


async def test_a_key_no_header_could_carry_fails_the_try_without_retry_or_a_word_of_it(pool: Pool) -> None:
    """The policy refuses such a key; one set past it (an adapter's environment) still never reaches the wire."""
    client, server = await upstream(pool, Json())
    client._headers["authorization"] = "Bearer sk-oops\r\nx-evil: 1"
    try:
        with pytest.raises(UpstreamUnavailable) as failed:
            await client.send("/chat/completions", b"{}", {}, stream=False)
    finally:
        await server.stop()
    assert not failed.value.retryable
    assert "sk-oops" not in str(failed.value)
    assert server.count == 0
