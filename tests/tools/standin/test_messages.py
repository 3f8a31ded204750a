"""The Anthropic Messages stand-in on loopback, read with the official anthropic client: answers, tools, faults."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest

from gateway.inbound.messages.count import input_tokens
from gateway.tools.standin.messages import COUNT_BASE, INPUT_TOKENS, MessagesFault, MessagesStandIn, count_of
from tests.conftest import Loop

HELLO: list[Any] = [{"role": "user", "content": "Hello"}]
WEATHER: list[Any] = [{"name": "get_weather", "description": "The weather.",
                       "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]


def client_of(url: str, key: str) -> anthropic.Anthropic:
    """A client sending key in x-api-key, as Anthropic's API takes it (this client's default is a bearer token)."""
    return anthropic.Anthropic(base_url=url, api_key=None, auth_token=None, default_headers={"x-api-key": key},
                               max_retries=0)


@pytest.fixture
def served(loop: Loop) -> Iterator[tuple[MessagesStandIn, anthropic.Anthropic, str]]:
    app = MessagesStandIn("claude", chunks=3, key="sk-ant-standin")
    url = loop.serve(app).url
    with client_of(url, "sk-ant-standin") as client:
        yield app, client, url


def test_a_message_is_its_label_and_counted_words_with_anthropics_usage(
        served: tuple[MessagesStandIn, anthropic.Anthropic, str]) -> None:
    app, client, _ = served
    message = client.messages.create(model="claude-x", max_tokens=50, messages=HELLO)
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == "[claude] word0 word1 word2 "  # type: ignore[union-attr]
    assert (message.stop_reason, message.model) == ("end_turn", "claude-x")
    assert (message.usage.input_tokens, message.usage.output_tokens) == (INPUT_TOKENS, 4)  # a token a piece
    assert (message.usage.cache_read_input_tokens, message.usage.cache_creation_input_tokens) == (0, 0)
    assert app.seen[-1].path == "/v1/messages"
    assert app.seen[-1].body["messages"] == HELLO


def test_a_stream_reads_as_the_same_message(served: tuple[MessagesStandIn, anthropic.Anthropic, str]) -> None:
    _, client, _ = served
    with client.messages.stream(model="claude-x", max_tokens=50, messages=HELLO) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "[claude] word0 word1 word2 "
    assert (final.stop_reason, final.usage.output_tokens) == ("end_turn", 4)


@pytest.mark.parametrize("stream", [False, True])
def test_the_first_tool_is_called_until_the_conversation_holds_its_result(
        served: tuple[MessagesStandIn, anthropic.Anthropic, str], stream: bool) -> None:
    _, client, _ = served
    call: anthropic.types.Message
    if stream:
        with client.messages.stream(model="claude-x", max_tokens=50, messages=HELLO, tools=WEATHER) as events:
            call = events.get_final_message()
    else:
        call = client.messages.create(model="claude-x", max_tokens=50, messages=HELLO, tools=WEATHER)
    [block] = call.content
    assert block.type == "tool_use"
    assert (block.name, block.input) == ("get_weather", {"city": "Paris"})
    assert call.stop_reason == "tool_use"
    result = [*HELLO, {"role": "assistant", "content": [block.model_dump()]},
              {"role": "user", "content": [{"type": "tool_result", "tool_use_id": block.id, "content": "sunny"}]}]
    answer = client.messages.create(model="claude-x", max_tokens=50, messages=result, tools=WEATHER)
    assert answer.content[0].type == "text"


def test_a_prompt_marked_for_caching_reads_part_of_it_from_the_cache(
        served: tuple[MessagesStandIn, anthropic.Anthropic, str]) -> None:
    _, client, _ = served
    cached = [{"role": "user", "content": [{"type": "text", "text": "Hi", "cache_control": {"type": "ephemeral"}}]}]
    usage = client.messages.create(model="claude-x", max_tokens=50, messages=cached).usage  # type: ignore[arg-type]
    assert (usage.cache_read_input_tokens, usage.cache_creation_input_tokens) == (4, 2)


def test_a_wrong_key_and_an_unknown_path_are_anthropic_shaped_errors(
        served: tuple[MessagesStandIn, anthropic.Anthropic, str]) -> None:
    _, _, url = served
    with client_of(url, "wrong") as other, \
            pytest.raises(anthropic.AuthenticationError) as caught:
        other.messages.create(model="claude-x", max_tokens=50, messages=HELLO)
    assert caught.value.body == {"type": "error", "error": {"type": "authentication_error",
                                                            "message": "claude: error 401"}}
    missing = httpx.post(url + "/v1/complete", headers={"x-api-key": "sk-ant-standin"}, json={})
    assert (missing.status_code, missing.json()["error"]["type"]) == (404, "not_found_error")


def test_a_fault_status_is_answered_with_its_retry_after(
        served: tuple[MessagesStandIn, anthropic.Anthropic, str]) -> None:
    app, client, _ = served
    app.faults.append(MessagesFault(status=529, retry_after="3"))
    with pytest.raises(anthropic.APIStatusError) as caught:
        client.messages.create(model="claude-x", max_tokens=50, messages=HELLO)
    assert caught.value.status_code == 529
    assert caught.value.response.headers["retry-after"] == "3"
    assert client.messages.create(model="claude-x", max_tokens=50, messages=HELLO).stop_reason == "end_turn"


def test_an_error_event_ends_a_stream_after_the_deltas_asked_for(
        served: tuple[MessagesStandIn, anthropic.Anthropic, str]) -> None:
    app, client, _ = served
    app.faults.append(MessagesFault(error_after=2))
    pieces: list[str] = []

    def read() -> None:
        with client.messages.stream(model="claude-x", max_tokens=50, messages=HELLO) as stream:
            pieces.extend(stream.text_stream)

    with pytest.raises(anthropic.APIStatusError, match="Overloaded"):
        read()
    assert "".join(pieces) == "[claude] word0 "


def test_a_cut_ends_a_stream_without_its_ending(served: tuple[MessagesStandIn, anthropic.Anthropic, str]) -> None:
    app, _, url = served
    app.faults.append(MessagesFault(cut_after=1))
    body = {"model": "claude-x", "max_tokens": 50, "messages": HELLO, "stream": True}
    received: list[bytes] = []

    def read() -> None:
        with httpx.stream("POST", url + "/v1/messages", headers={"x-api-key": "sk-ant-standin"}, json=body,
                          timeout=10) as response:
            received.extend(response.iter_bytes())

    with pytest.raises(httpx.RemoteProtocolError):
        read()
    assert b"event: content_block_delta" in b"".join(received)
    assert b"message_stop" not in b"".join(received)


def test_count_tokens_answers_a_count_of_its_own_never_the_gateways_estimate(
        served: tuple[MessagesStandIn, anthropic.Anthropic, str]) -> None:
    app, client, _ = served
    counted = client.messages.count_tokens(model="claude-x", messages=HELLO, system="Be brief.")
    body = {"model": "claude-x", "messages": HELLO, "system": "Be brief."}
    assert counted.input_tokens == count_of(body)["input_tokens"] > COUNT_BASE
    assert counted.input_tokens != input_tokens(body)
    assert (app.seen[-1].path, app.seen[-1].body) == ("/v1/messages/count_tokens", body)
    longer = client.messages.count_tokens(model="claude-x", messages=[{"role": "user", "content": "Hello " * 300}])
    assert longer.input_tokens > counted.input_tokens


def test_count_tokens_takes_faults_and_a_raw_answer(served: tuple[MessagesStandIn, anthropic.Anthropic, str]) -> None:
    app, client, url = served
    app.faults.extend([MessagesFault(status=500), MessagesFault(body=b"<html>no</html>")])
    with pytest.raises(anthropic.InternalServerError):
        client.messages.count_tokens(model="claude-x", messages=HELLO)
    raw = httpx.post(url + "/v1/messages/count_tokens", headers={"x-api-key": "sk-ant-standin"},
                     json={"model": "claude-x", "messages": HELLO})
    assert (raw.status_code, raw.content) == (200, b"<html>no</html>")
