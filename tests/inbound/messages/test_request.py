"""Messages requests as chat completions requests: every field that carries, and what is dropped and named."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gateway.errors import InvalidRequest
from gateway.inbound.messages.request import to_chat

BASE: dict[str, Any] = {"model": "claude-route", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}


def test_plain_fields_carry() -> None:
    body = {**BASE, "temperature": 0.2, "top_p": 0.9, "top_k": 5, "stop_sequences": ["END"], "stream": True,
            "metadata": {"user_id": "u-1"}}
    out = to_chat(body)
    assert out.body == {"model": "claude-route", "max_tokens": 64, "temperature": 0.2, "top_p": 0.9, "stream": True,
                        "top_k": 5, "stop": ["END"], "user": "u-1", "messages": [{"role": "user", "content": "hi"}]}
    assert out.dropped == set()


def test_top_k_is_dropped_where_the_upstream_does_not_take_it() -> None:
    out = to_chat({**BASE, "top_k": 5}, top_k=False)
    assert "top_k" not in out.body
    assert out.dropped == {"top_k"}


@pytest.mark.parametrize("system", ["be brief", [{"type": "text", "text": "be"}, {"type": "text", "text": "brief"}]])
def test_system_string_or_blocks(system: Any) -> None:
    messages = to_chat({**BASE, "system": system}).body["messages"]
    assert messages[0]["role"] == "system"
    assert messages[0]["content"] in ("be brief", "be\nbrief")
    assert messages[1] == {"role": "user", "content": "hi"}


def test_cache_control_is_dropped_and_named() -> None:
    body = {**BASE, "system": [{"type": "text", "text": "long", "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": "q", "cache_control": {"type": "ephemeral"}}]}]}
    out = to_chat(body)
    assert b"cache_control" not in orjson.dumps(out.body)
    assert out.dropped == {"cache_control"}


def test_images_become_image_url_parts() -> None:
    content = [{"type": "text", "text": "what is this"},
               {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}},
               {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}]
    parts = to_chat({**BASE, "messages": [{"role": "user", "content": content}]}).body["messages"][0]["content"]
    assert parts == [{"type": "text", "text": "what is this"},
                     {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}},
                     {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]


def test_a_tool_round_trip() -> None:
    body = {**BASE,
            "tools": [{"name": "weather", "description": "the weather", "input_schema": {
                "type": "object", "properties": {"city": {"type": "string"}}}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
            "messages": [
                {"role": "user", "content": "weather in Paris?"},
                {"role": "assistant", "content": [{"type": "text", "text": "Looking."},
                                                  {"type": "tool_use", "id": "toolu_1", "name": "weather",
                                                   "input": {"city": "Paris"}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                              "content": [{"type": "text", "text": "sunny"}]},
                                             {"type": "text", "text": "and tomorrow?"}]}]}
    out = to_chat(body).body
    assert out["tools"] == [{"type": "function", "function": {
        "name": "weather", "description": "the weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
    assert out["tool_choice"] == "required"
    assert out["parallel_tool_calls"] is False
    assert out["messages"][1] == {"role": "assistant", "content": "Looking.", "tool_calls": [
        {"id": "toolu_1", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Paris"}'}}]}
    assert out["messages"][2] == {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"}
    assert out["messages"][3] == {"role": "user", "content": "and tomorrow?"}


@pytest.mark.parametrize(("choice", "expected"), [
    ({"type": "auto"}, "auto"), ({"type": "none"}, "none"),
    ({"type": "tool", "name": "weather"}, {"type": "function", "function": {"name": "weather"}}),
])
def test_tool_choice(choice: dict[str, Any], expected: Any) -> None:
    tools = [{"name": "weather", "input_schema": {"type": "object"}}]
    assert to_chat({**BASE, "tools": tools, "tool_choice": choice}).body["tool_choice"] == expected


def test_an_assistant_turn_of_only_a_tool_call_has_no_text() -> None:
    message = {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]}
    out = to_chat({**BASE, "messages": [BASE["messages"][0], message]}).body["messages"][1]
    assert out["content"] is None
    assert out["tool_calls"][0]["function"]["arguments"] == "{}"


def test_thinking_is_dropped_and_named() -> None:
    message = {"role": "assistant", "content": [{"type": "thinking", "thinking": "hmm", "signature": "s"},
                                                {"type": "text", "text": "yes"}]}
    out = to_chat({**BASE, "thinking": {"type": "enabled", "budget_tokens": 1024},
                   "messages": [BASE["messages"][0], message]})
    assert out.body["messages"][1] == {"role": "assistant", "content": "yes"}
    assert out.dropped == {"thinking"}


def test_tool_result_images_follow_as_a_user_message() -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}
    content = [{"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "shot"}, image],
                "is_error": True}]
    out = to_chat({**BASE, "messages": [{"role": "user", "content": content}]})
    assert out.body["messages"][0] == {"role": "tool", "tool_call_id": "t1", "content": "shot"}
    assert out.body["messages"][1]["content"][0]["type"] == "image_url"
    assert out.dropped == {"is_error"}


def test_a_text_document_is_text() -> None:
    block = {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "the doc"}}
    out = to_chat({**BASE, "messages": [{"role": "user", "content": [block]}]}).body
    assert out["messages"][0] == {"role": "user", "content": "the doc"}


@pytest.mark.parametrize(("body", "param"), [
    ({**BASE, "messages": []}, "messages"),
    ({**BASE, "messages": [{"role": "system", "content": "x"}]}, "messages.0"),
    ({**BASE, "messages": [{"role": "user", "content": [{"text": "no type"}]}]}, "messages.0.content[0]"),
    ({**BASE, "messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "file"}}]}]},
     "messages.0.content"),
    ({**BASE, "tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools.0"),
    ({**BASE, "tools": "weather"}, "tools"),
    ({**BASE, "tool_choice": {"type": "sometimes"}}, "tool_choice.type"),
    ({**BASE, "system": [{"type": "image"}]}, "system"),
    ({**BASE, "messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": {
        "a": 1}}]}]}, "messages.0.content[0].content"),
    ({**BASE, "messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": 5}]}]},
     "messages.0.content[0].tool_use_id"),
    ({**BASE, "messages": [{"role": "assistant", "content": [{"type": "tool_use", "name": "f", "input": {}}]}]},
     "messages.0.content[0].id"),
    ({**BASE, "messages": [{"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": 5}]}]},
     "messages.0.content[0].name"),
])
def test_what_cannot_be_translated_is_a_400_naming_its_place(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        to_chat(body)
    assert caught.value.param == param
