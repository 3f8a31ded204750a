"""gateway.inbound.openai: OpenAI's wire format as the pipeline sees it, its error JSON and its rate headers."""

from __future__ import annotations

import math

import orjson
import pytest

from gateway.asgi import Message
from gateway.errors import GatewayError, InvalidRequest, NoCandidate, RateLimited, UpstreamFailed, UpstreamStatus
from gateway.inbound.openai import (
    ENDPOINTS,
    RESETS,
    OpenAIInbound,
    Resets,
    bearer,
    duration,
    error_body,
    rate_headers,
)
from gateway.routing.policy.decide import Decision
from gateway.state.base import NANO, Admission, Limits, Rate

CHAT = ENDPOINTS["/v1/chat/completions"]
RESPONSES = ENDPOINTS["/v1/responses"]


class Upstream:
    """An upstream as the adapter sees it: a name."""

    def __init__(self, name: str) -> None:
        self.name = name


@pytest.mark.parametrize(("seconds", "text"), [(0, "0ms"), (0.0201, "21ms"), (1, "1s"), (59.734, "59.734s"),
                                               (60, "1m0s"), (360, "6m0s"), (61.5, "1m1.5s"), (-3, "0ms")])
def test_a_reset_is_written_as_openai_writes_it(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_a_reset_of_any_whole_millisecond_is_written_with_its_decimals_trimmed() -> None:
    for given in (*range(0, 3000), *range(59_000, 61_000), *range(119_990, 120_010), 599_999, 10**9 + 7):
        ms = math.ceil(given / 1000 * 1000)  # as duration rounds: 2.007 s is 2007.0000000000002 ms, so 2008
        minutes, rest = divmod(ms, 60_000)
        text = f"{rest / 1000:.3f}".rstrip("0").rstrip(".") + "s" if ms >= 1000 else f"{ms}ms"
        assert duration(given / 1000) == (f"{minutes}m{text}" if minutes and ms >= 1000 else text)


def test_reset_values_are_written_once_and_kept_within_their_bound() -> None:
    resets = Resets()
    assert (resets[59.5], resets[60.0]) == (b"59.5s", b"1m0s")
    assert resets[59.5] is resets[59.5]
    for ms in range(RESETS + 10):
        assert resets[ms / 1000] == duration(ms / 1000).encode()
    assert len(resets) <= RESETS


def test_the_headers_name_each_configured_limit() -> None:
    limits = Limits("acme", requests_per_minute=60, tokens_per_minute=1000)
    admission = Admission(True, rates={"requests": Rate(59, 60.0), "tokens": Rate(981, 59.5)})
    assert rate_headers(limits, admission) == [
        (b"x-ratelimit-limit-requests", b"60"), (b"x-ratelimit-remaining-requests", b"59"),
        (b"x-ratelimit-reset-requests", b"1m0s"),
        (b"x-ratelimit-limit-tokens", b"1000"), (b"x-ratelimit-remaining-tokens", b"981"),
        (b"x-ratelimit-reset-tokens", b"59.5s")]
    assert rate_headers(Limits("acme", budgets=(("day", NANO),)), Admission(True)) == []


@pytest.mark.parametrize(("error", "shape"), [
    (InvalidRequest("bad", param="n"), ("invalid_request_error", "invalid_request", "n")),
    (UpstreamFailed("all failed", status=504, code="upstream_timeout"), ("server_error", "upstream_timeout", None)),
    (NoCandidate("no_healthy_upstream", "none"), ("server_error", "no_healthy_upstream", None)),
    (NoCandidate("budget_exhausted", "spent"), ("insufficient_quota", "insufficient_quota", None)),
    (RateLimited("slow down", "tokens"), ("tokens", "rate_limit_exceeded", None)),
    (GatewayError("boom"), ("server_error", "internal_error", None)),
])
def test_every_error_is_openais_error_json(error: GatewayError, shape: tuple[str, str, str | None]) -> None:
    body = orjson.loads(error_body(error))["error"]
    assert (body["type"], body["code"], body["param"]) == shape
    assert body["message"] == error.message


def test_an_error_reply_carries_the_errors_own_headers() -> None:
    reply = OpenAIInbound().error(RateLimited("slow down", "requests", headers=[(b"retry-after", b"3")]))
    assert (reply.status, reply.content_type, reply.headers) == (429, b"application/json", [(b"retry-after", b"3")])


@pytest.mark.parametrize(("header", "key"), [("Bearer sk-1", "sk-1"), ("bearer  sk-1 ", "sk-1"), ("Basic sk-1", ""),
                                             ("Bearer ", ""), ("", "")])
def test_the_key_is_the_bearer_tokens(header: str, key: str) -> None:
    assert bearer({"authorization": header} if header else {}) == key


async def test_a_body_is_the_pipelines_as_it_came_and_goes_upstream_untouched() -> None:
    inbound = OpenAIInbound()
    call = inbound.parse(CHAT, b'{"model": "chat", "future": [1]}', {})
    assert call.body == call.client_body == {"model": "chat", "future": [1]}
    assert inbound.outbound(call, []) == ("/chat/completions", call.body)
    assert await inbound.answer(call, Upstream("a"), b'{"id": "x"}') == b'{"id": "x"}'
    with pytest.raises(InvalidRequest):
        inbound.parse(CHAT, b"[1]", {})


def test_an_upstreams_error_keeps_its_json_content_type_and_nothing_else() -> None:
    inbound = OpenAIInbound()
    call = inbound.parse(CHAT, b'{"model": "chat"}', {})
    passed = inbound.upstream_error(call, UpstreamStatus("a", 422, b"{}", b"application/json; charset=utf-8"), b"{}")
    assert (passed.status, passed.content_type) == (422, b"application/json; charset=utf-8")
    html = inbound.upstream_error(call, UpstreamStatus("a", 400, b"<p>", b"text/html"), b"<p>")
    assert html.content_type == b"application/json"


async def test_a_responses_answer_pins_its_follow_ups_to_the_upstream_that_holds_it() -> None:
    inbound = OpenAIInbound()
    first = inbound.parse(RESPONSES, b'{"model": "chat", "input": "hi"}', {})
    await inbound.answer(first, Upstream("b"), b'{"id": "resp_1"}')
    follow_up = inbound.parse(RESPONSES, b'{"model": "chat", "input": "more", "previous_response_id": "resp_1"}', {})
    decision = Decision("chat", ("a", "b"), None, "order", None)
    assert (await inbound.pin(follow_up, decision)).candidates == ("b",)
    assert await inbound.pin(first, decision) is decision


async def test_a_chat_stream_fails_with_one_error_event() -> None:
    inbound = OpenAIInbound()
    events = await inbound.events(inbound.parse(CHAT, b'{"model": "chat"}', {}), Upstream("a"), b"")
    send = object()
    assert events.outgoing(send) is send
    assert events.ending(b"data: [DONE]\n\n") == b"data: [DONE]\n\n"
    error = orjson.loads(events.failed("cut").removeprefix(b"data: "))["error"]
    assert (error["message"], error["code"]) == ("cut", "stream_interrupted")


async def test_a_responses_stream_fails_numbered_after_the_last_event_sent() -> None:
    inbound = OpenAIInbound()
    created = b'event: response.created\ndata: {"type":"response.created","sequence_number":0,' \
              b'"response":{"id":"resp_2","status":"in_progress"}}\n\n'
    events = await inbound.events(inbound.parse(RESPONSES, b'{"model": "chat"}', {}), Upstream("a"), created)
    assert await inbound.holders.holder("resp_2") == "a"
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    outgoing = events.outgoing(send)
    await outgoing({"type": "http.response.body", "body": b'data: {"sequence_number":7}\n\n', "more_body": True})
    failed = orjson.loads(events.failed("cut").split(b"data: ", 1)[1])
    assert (failed["type"], failed["sequence_number"], failed["response"]["id"]) == ("response.failed", 8, "resp_2")
    assert len(sent) == 1
