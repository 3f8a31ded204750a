"""The Messages inbound on its own: its key headers, the fields it requires, its clients per upstream, its errors."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.accounting.usage import Usage
from gateway.errors import InvalidRequest, RateLimited, UpstreamStatus
from gateway.inbound.messages.adapter import ENDPOINT, MessagesEvents, MessagesInbound, rate_headers
from gateway.inbound.messages.translated import TranslatedUpstream
from gateway.operations.metrics import Metrics
from gateway.pipeline.runtime import Runtime
from gateway.routing.policy.loader import load_policy
from gateway.state.base import Admission, Limits, Rate
from gateway.upstreams.http import Pool
from gateway.upstreams.messages import MessagesUpstream
from tests.conftest import upstream_spec, write_policy

BODY = {"model": "chat", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def inbound() -> MessagesInbound:
    return MessagesInbound(Metrics())


def test_the_key_is_read_from_x_api_key_first_then_a_bearer_token(inbound: MessagesInbound) -> None:
    assert inbound.credential({"x-api-key": " sk-one ", "authorization": "Bearer sk-two"}) == "sk-one"
    assert inbound.credential({"authorization": "Bearer sk-two"}) == "sk-two"
    assert inbound.credential({}) == ""
    assert inbound.credential_hint == "x-api-key: <key>"


def test_a_request_is_parsed_as_it_came(inbound: MessagesInbound) -> None:
    call = inbound.parse(ENDPOINT, orjson.dumps(BODY), {})
    assert call.body == BODY
    assert call.client_body is call.body
    assert (call.endpoint.path, call.endpoint.upstream_path) == ("/v1/messages", "/messages")


@pytest.mark.parametrize(("change", "param"), [
    ({"max_tokens": None}, "max_tokens"), ({"max_tokens": 0}, "max_tokens"), ({"max_tokens": True}, "max_tokens"),
    ({"max_tokens": "50"}, "max_tokens"), ({"system": 7}, "system"),
])
def test_what_anthropic_requires_is_checked_with_the_field_named(inbound: MessagesInbound, change: dict[str, Any],
                                                                  param: str) -> None:
    body = {k: v for k, v in {**BODY, **change}.items() if v is not None}
    with pytest.raises(InvalidRequest) as caught:
        inbound.parse(ENDPOINT, orjson.dumps(body), {})
    assert (caught.value.status, caught.value.param) == (400, param)


def test_a_system_prompt_may_be_a_string_or_blocks(inbound: MessagesInbound) -> None:
    for system in ("Be brief.", [{"type": "text", "text": "Be brief."}]):
        assert inbound.parse(ENDPOINT, orjson.dumps({**BODY, "system": system}), {}).body["system"] == system


def test_usage_counts_cache_reads_and_writes_as_prompt_tokens(inbound: MessagesInbound) -> None:
    call = inbound.parse(ENDPOINT, orjson.dumps(BODY), {})
    answer = {"usage": {"input_tokens": 10, "cache_read_input_tokens": 4, "cache_creation_input_tokens": 2,
                        "output_tokens": 7}}
    assert inbound.usage(call, orjson.dumps(answer)) == Usage(16, 7, cache_read_tokens=4, cache_write_tokens=2)
    assert inbound.usage(call, b"<html>") == Usage()


async def test_bind_gives_each_upstream_a_client_in_its_own_way_once_per_runtime(tmp_path: Path) -> None:
    metrics = Metrics()
    inbound = MessagesInbound(metrics)
    upstreams = {"native": upstream_spec("http://127.0.0.1:1", capabilities=["messages"]),
                 "chatty": upstream_spec("http://127.0.0.1:2")}
    policy = load_policy(write_policy(tmp_path, upstreams, {"chat": {"candidates": ["native", "chatty"]}}))
    pool = Pool()
    try:
        runtime = Runtime.build(policy, pool)
        bound = inbound.bind(runtime)
        assert inbound.bind(runtime) is bound
        assert inbound.bind(Runtime.build(policy, pool)) is not bound
    finally:
        await pool.close()
    assert (bound.policy, bound.pool) == (policy, pool)
    assert isinstance(bound.upstreams["native"], MessagesUpstream)
    chatty = bound.upstreams["chatty"]
    assert isinstance(chatty, TranslatedUpstream)
    chatty.encode({**BODY, "thinking": {"type": "enabled", "budget_tokens": 1000}}, False)
    assert ('switchyard_translation_dropped_total{field="thinking",upstream="chatty"} 1.0'
            in metrics.exposition().decode())


def test_errors_are_anthropics_with_their_own_headers(inbound: MessagesInbound) -> None:
    reply = inbound.error(RateLimited("slow down", "requests", headers=[(b"retry-after", b"3")]))
    assert reply.status == 429
    assert orjson.loads(reply.body) == {"type": "error", "error": {"type": "rate_limit_error",
                                                                   "message": "slow down"}}
    assert (b"retry-after", b"3") in reply.headers


def test_an_openai_shaped_upstream_error_is_reworded_in_anthropics_shape(inbound: MessagesInbound) -> None:
    call = inbound.parse(ENDPOINT, orjson.dumps(BODY), {})
    error = UpstreamStatus("chatty", 400, b"", b"application/json")
    reply = inbound.upstream_error(call, error, b'{"error": {"message": "bad field", "type": "invalid_request_error"}}')
    assert reply.status == 400
    assert orjson.loads(reply.body) == {"type": "error", "error": {"type": "invalid_request_error",
                                                                   "message": "bad field"}}


def test_a_stream_that_cannot_finish_ends_with_an_error_event() -> None:
    event = MessagesEvents().failed("upstream gone")
    assert event.startswith(b"event: error\ndata: ")
    assert orjson.loads(event.split(b"data: ", 1)[1]) == {"type": "error", "error": {"type": "api_error",
                                                                                     "message": "upstream gone"}}


def test_rate_headers_name_each_configured_limit_with_an_rfc_3339_reset() -> None:
    now = dt.datetime(2026, 12, 1, 15, 0, 0, tzinfo=dt.UTC)
    limits = Limits("acme", requests_per_minute=60, tokens_per_minute=1000)
    admission = Admission(True, rates={"requests": Rate(59, 60.0), "tokens": Rate(981, 29.5)})
    assert rate_headers(limits, admission, now) == [
        (b"anthropic-ratelimit-requests-limit", b"60"), (b"anthropic-ratelimit-requests-remaining", b"59"),
        (b"anthropic-ratelimit-requests-reset", b"2026-12-01T15:01:00Z"),
        (b"anthropic-ratelimit-tokens-limit", b"1000"), (b"anthropic-ratelimit-tokens-remaining", b"981"),
        (b"anthropic-ratelimit-tokens-reset", b"2026-12-01T15:00:29Z")]
    assert rate_headers(Limits("acme"), admission, now) == []
