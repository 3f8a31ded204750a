"""Prompt-cache tokens priced end to end (issue 16): the official anthropic and openai clients against a gateway
whose upstreams report cache reads and writes; each answer's x-switchyard-cost-usd, the spend and the metrics
checked against prices worked out by hand.

`claude` is the fake Anthropic server: 10 input tokens and, for a request that marks cache_control, 4 more read
from the cache and 2 written to it. It is priced $3 in, $15 out, $0.30 a cache read and $3.75 a cache write per
Mtok (Anthropic's 0.1x and 1.25x), passed through to the Messages client (`claude`) and translated by litellm for
the OpenAI client (`claude-chat`). `cached` is an OpenAI-compatible server that reports 1000 prompt tokens, 800 of
them cached, and 10 completion tokens; it is priced $2.50 in, $10 out and $1.25 a cached token per Mtok.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import orjson
import pytest

from gateway.asgi import Receive, Scope, Send, read_body, send_bytes
from gateway.serving.app import Gateway, Settings
from gateway.sse import DONE_EVENT, usage_event
from gateway.tools.standin.app import lifespan
from gateway.tools.standin.events import chunk
from gateway.tools.standin.messages import INPUT_TOKENS, MessagesStandIn
from tests.conftest import KEY, Loop, key_hash, settled_spend, write_policy

# litellm silences these pydantic warnings process-wide at import; pytest's "error" filter would revive them
pytestmark = pytest.mark.filterwarnings("ignore:.*`ReadOnly` qualifier:UserWarning")

ADMIN_KEY = "sy-admin-test-key-0123456789abcdef"
UPSTREAM_KEY = "sk-ant-api03-cache-test-0123456789abcdef"
CLAUDE = {"input_per_mtok": 3.0, "output_per_mtok": 15.0, "cache_read_per_mtok": 0.3, "cache_write_per_mtok": 3.75,
          "cache_write_1h_per_mtok": 6.0}
CACHED = {"input_per_mtok": 2.5, "output_per_mtok": 10.0, "cache_read_per_mtok": 1.25}
READ, WRITTEN = 4, 2  # what the fake Anthropic reports for a request that marks cache_control
SYSTEM = [{"type": "text", "text": "A long system prompt.", "cache_control": {"type": "ephemeral"}}]
HELLO: list[Any] = [{"role": "user", "content": "Say hello."}]
MARKED = [{"role": "user", "content": [{"type": "text", "text": "Say hello.", "cache_control": {"type": "ephemeral"}}]}]
CACHED_USAGE = {"prompt_tokens": 1000, "completion_tokens": 10, "total_tokens": 1010,
                "prompt_tokens_details": {"cached_tokens": 800, "audio_tokens": 0}}


def claude_cost(output: int, hour: bool = False) -> float:
    """USD for one cache-marked request to claude: its input, cache reads and cache writes each at their price (the
    writes at the one-hour price when hour)."""
    return (INPUT_TOKENS * 3.0 + READ * 0.3 + WRITTEN * (6.0 if hour else 3.75) + output * 15.0) / 1e6


CACHED_COST = (200 * 2.5 + 800 * 1.25 + 10 * 10.0) / 1e6


class CachedChat:
    """An OpenAI-compatible server whose every answer, whole or streamed, reports CACHED_USAGE."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        body = orjson.loads(await read_body(receive, {}, 1 << 20))
        if not body.get("stream"):
            answer = {"id": "chatcmpl-cached", "object": "chat.completion", "created": 0, "model": body["model"],
                      "choices": [{"index": 0, "message": {"role": "assistant", "content": "cached answer"},
                                   "finish_reason": "stop", "logprobs": None}], "usage": CACHED_USAGE}
            await send_bytes(send, 200, orjson.dumps(answer), b"application/json")
            return
        template = {"id": "chatcmpl-cached", "object": "chat.completion.chunk", "created": 0, "model": body["model"]}
        events = (chunk(body["model"], role=True) + chunk(body["model"], "cached answer")
                  + chunk(body["model"], finish="stop") + usage_event(template, CACHED_USAGE) + DONE_EVENT)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        await send({"type": "http.response.body", "body": events, "more_body": False})


@dataclass
class Rig:
    """The gateway, the fake Anthropic server behind it, and clients for it."""

    loop: Loop
    gateway: Gateway
    url: str
    claude: MessagesStandIn

    def anthropic(self) -> anthropic.Anthropic:
        return anthropic.Anthropic(base_url=self.url, api_key=KEY, max_retries=0)

    def metric(self, name: str, **labels: str) -> float:
        self.loop.settled()
        return self.gateway.metrics.registry.get_sample_value(name, labels) or 0.0

    def spend(self, upstream: str) -> float:
        """What the day's spend says the tenant spent at upstream, once nothing is reserved any more."""
        row = settled_spend(self.url, ADMIN_KEY, lambda found: upstream in found["upstreams"])
        return float(row["upstreams"][upstream]["cost_usd"])


@pytest.fixture
def rig(loop: Loop, tmp_path: Path) -> Rig:
    claude = MessagesStandIn("claude", key=UPSTREAM_KEY)
    claude_url, cached_url = loop.serve(claude).url, loop.serve(CachedChat()).url
    anthropic_kind = {"kind": "anthropic", "model": "claude-upstream-model", "api_key": UPSTREAM_KEY,
                      "region": "us", "context_window": 200_000, "cost": CLAUDE}
    upstreams = {"claude": {**anthropic_kind, "base_url": claude_url + "/v1"},  # passed through (Messages)
                 "claude-chat": {**anthropic_kind, "base_url": claude_url},  # litellm adds /v1/messages itself
                 "cached": {"base_url": cached_url + "/v1", "model": "cached-model", "region": "us",
                            "context_window": 200_000, "cost": CACHED}}
    models = {name: {"candidates": [name]} for name in upstreams}
    tenants = {"acme": {"keys": [key_hash(KEY)], "budget": {"usd_per_day": 100.0}}}  # a budget: spend is kept
    path = write_policy(tmp_path, upstreams, models, tenants=tenants)
    gateway = Gateway(Settings(policy=str(path), admin_key=ADMIN_KEY))
    return Rig(loop, gateway, loop.serve(gateway).url, claude)


# --- the Messages API, passed through to Anthropic ---------------------------------------------------------------


def test_a_messages_answer_costs_its_cache_reads_at_the_discount_and_its_writes_at_the_premium(rig: Rig) -> None:
    with rig.anthropic() as client:
        raw = client.messages.with_raw_response.create(model="claude", max_tokens=64, messages=HELLO,
                                                       system=SYSTEM)  # type: ignore[arg-type]
    usage = raw.parse().usage
    assert (usage.input_tokens, usage.cache_read_input_tokens, usage.cache_creation_input_tokens) == (10, 4, 2)
    cost = float(raw.headers["x-switchyard-cost-usd"])
    assert cost == pytest.approx(claude_cost(usage.output_tokens), abs=1e-10)
    assert cost != pytest.approx((16 * 3.0 + usage.output_tokens * 15.0) / 1e6)  # not every token at the input price
    assert rig.spend("claude") == pytest.approx(cost, abs=1e-9)
    assert rig.metric("switchyard_tokens_total", tenant="acme", upstream="claude", type="prompt") == 16
    assert rig.metric("switchyard_cache_tokens_total", tenant="acme", upstream="claude", kind="read") == READ
    assert rig.metric("switchyard_cache_tokens_total", tenant="acme", upstream="claude", kind="write") == WRITTEN


def test_a_messages_stream_is_spent_at_the_cache_prices_too(rig: Rig) -> None:
    with rig.anthropic() as client, client.messages.stream(model="claude", max_tokens=64, messages=HELLO,
                                                           system=SYSTEM) as stream:  # type: ignore[arg-type]
        final = stream.get_final_message()
    assert (final.usage.cache_read_input_tokens, final.usage.cache_creation_input_tokens) == (READ, WRITTEN)
    assert rig.spend("claude") == pytest.approx(claude_cost(final.usage.output_tokens), abs=1e-9)
    assert rig.metric("switchyard_cache_tokens_total", tenant="acme", upstream="claude", kind="write") == WRITTEN


@pytest.mark.parametrize("stream", [False, True])
def test_one_hour_cache_writes_cost_the_one_hour_price(rig: Rig, stream: bool) -> None:
    system = [{**SYSTEM[0], "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
    with rig.anthropic() as client:
        if stream:
            with client.messages.stream(model="claude", max_tokens=64, messages=HELLO,
                                        system=system) as events:  # type: ignore[arg-type]
                output = events.get_final_message().usage.output_tokens
        else:
            raw = client.messages.with_raw_response.create(model="claude", max_tokens=64, messages=HELLO,
                                                           system=system)  # type: ignore[arg-type]
            output = raw.parse().usage.output_tokens
            assert float(raw.headers["x-switchyard-cost-usd"]) == pytest.approx(claude_cost(output, hour=True),
                                                                                abs=1e-10)
    assert rig.spend("claude") == pytest.approx(claude_cost(output, hour=True), abs=1e-9)
    assert claude_cost(output, hour=True) > claude_cost(output)  # dearer than five-minute writes


def test_a_request_without_cache_marks_costs_every_input_token_at_the_input_price(rig: Rig) -> None:
    with rig.anthropic() as client:
        raw = client.messages.with_raw_response.create(model="claude", max_tokens=64, messages=HELLO)
    output = raw.parse().usage.output_tokens
    assert float(raw.headers["x-switchyard-cost-usd"]) == pytest.approx((10 * 3.0 + output * 15.0) / 1e6, abs=1e-10)
    assert rig.metric("switchyard_cache_tokens_total", tenant="acme", upstream="claude", kind="read") == 0


# --- chat completions: an OpenAI-compatible server's cached_tokens, and Anthropic's through litellm -------------


def test_cached_tokens_of_an_openai_compatible_answer_cost_the_cache_read_price(rig: Rig) -> None:
    client = rig.loop.client(rig.url + "/v1")
    raw = client.chat.completions.with_raw_response.create(model="cached", messages=HELLO, max_tokens=10)
    answer = raw.parse()
    assert answer.usage is not None
    assert answer.usage.prompt_tokens_details is not None
    assert answer.usage.prompt_tokens_details.cached_tokens == 800  # passed through as it came
    assert float(raw.headers["x-switchyard-cost-usd"]) == pytest.approx(CACHED_COST, abs=1e-10)
    assert rig.spend("cached") == pytest.approx(CACHED_COST, abs=1e-9)
    assert rig.metric("switchyard_cache_tokens_total", tenant="acme", upstream="cached", kind="read") == 800
    assert rig.metric("switchyard_tokens_total", tenant="acme", upstream="cached", type="prompt") == 1000


def test_cached_tokens_of_a_stream_cost_the_cache_read_price_whether_or_not_the_client_sees_them(rig: Rig) -> None:
    client = rig.loop.client(rig.url + "/v1")
    for options in ({"include_usage": True}, None):
        extra = {"stream_options": options} if options else {}
        chunks = list(client.chat.completions.create(model="cached", messages=HELLO, max_tokens=10, stream=True,
                                                     **extra))  # type: ignore[call-overload]
        usage = [c.usage for c in chunks if c.usage is not None]
        assert [u.prompt_tokens_details.cached_tokens for u in usage] == ([800] if options else [])
    assert rig.spend("cached") == pytest.approx(2 * CACHED_COST, abs=1e-9)
    assert rig.metric("switchyard_cache_tokens_total", tenant="acme", upstream="cached", kind="read") == 1600


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_cache_tokens_through_litellm_cost_the_cache_prices(rig: Rig, stream: bool) -> None:
    client = rig.loop.client(rig.url + "/v1")
    if stream:
        chunks = list(client.chat.completions.create(model="claude-chat", messages=MARKED, max_tokens=64, stream=True,
                                                     stream_options={"include_usage": True}))  # type: ignore[arg-type]
        [usage] = [c.usage for c in chunks if c.usage is not None]
    else:
        raw = client.chat.completions.with_raw_response.create(model="claude-chat", messages=MARKED,  # type: ignore[arg-type]
                                                               max_tokens=64)
        found = raw.parse().usage
        assert found is not None
        usage = found
        assert float(raw.headers["x-switchyard-cost-usd"]) == pytest.approx(claude_cost(usage.completion_tokens),
                                                                             abs=1e-10)
    assert "cache_control" in orjson.dumps(rig.claude.seen[-1].body).decode()  # litellm kept the mark
    assert usage.prompt_tokens == INPUT_TOKENS + READ + WRITTEN
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == READ
    assert rig.spend("claude-chat") == pytest.approx(claude_cost(usage.completion_tokens), abs=1e-9)
    assert rig.metric("switchyard_cache_tokens_total", tenant="acme", upstream="claude-chat", kind="write") == WRITTEN
