"""Chat completions as Messages answers, each checked against the official anthropic SDK's own types."""

from __future__ import annotations

from typing import Any

import pytest
from anthropic.types import Message

from gateway.inbound.messages.answer import to_message, tool_input


def completion(message: dict[str, Any], finish: str = "stop", **choice: Any) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion", "model": "qwen", "created": 0,
            "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish, **choice}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15,
                      "prompt_tokens_details": {"cached_tokens": 2}}}


def test_text() -> None:
    out = to_message(completion({"content": "hello"}))
    Message.model_validate(out)
    assert out["id"] == "msg_chatcmpl-1"
    assert out["content"] == [{"type": "text", "text": "hello"}]
    assert out["stop_reason"] == "end_turn"
    assert out["usage"] == {"input_tokens": 10, "output_tokens": 3, "cache_read_input_tokens": 2,
                            "cache_creation_input_tokens": 0}


def test_cache_writes_reported_in_litellms_name_are_the_messages_cache_creation_tokens() -> None:
    answer = completion({"content": "hello"})
    answer["usage"]["prompt_tokens_details"] = {"cached_tokens": 2, "cache_creation_tokens": 7}
    out = to_message(answer)
    Message.model_validate(out)
    assert out["usage"] == {"input_tokens": 3, "output_tokens": 3, "cache_read_input_tokens": 2,
                            "cache_creation_input_tokens": 7}


@pytest.mark.parametrize("details", [{"cached_tokens": 20}, {"cached_tokens": -1, "cache_creation_tokens": "x"}, None])
def test_cache_counts_that_make_no_sense_never_make_the_input_negative(details: Any) -> None:
    answer = completion({"content": "hello"})
    answer["usage"]["prompt_tokens_details"] = details
    usage = to_message(answer)["usage"]
    assert min(usage.values()) >= 0
    assert usage["input_tokens"] + usage["cache_read_input_tokens"] + usage["cache_creation_input_tokens"] == 12


def test_tool_calls_and_reasoning() -> None:
    calls = [{"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Paris"}'}}]
    out = to_message(completion({"content": None, "reasoning_content": "think", "tool_calls": calls}, "tool_calls"))
    parsed = Message.model_validate(out)
    assert [b.type for b in parsed.content] == ["thinking", "tool_use"]
    assert out["content"][1] == {"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Paris"}}
    assert out["stop_reason"] == "tool_use"


def test_tool_calls_finished_with_stop_are_a_tool_use() -> None:
    calls = [{"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}]
    out = to_message(completion({"content": "Checking.", "tool_calls": calls}, "stop"))
    assert (out["stop_reason"], out["stop_sequence"]) == ("tool_use", None)


@pytest.mark.parametrize(("finish", "extra", "reason", "sequence"), [
    ("length", {}, "max_tokens", None), ("stop", {"stop_reason": "END"}, "stop_sequence", "END"),
    ("stop", {"stop_reason": 151645}, "end_turn", None), ("content_filter", {}, "refusal", None),
])
def test_stop_reasons(finish: str, extra: dict[str, Any], reason: str, sequence: str | None) -> None:
    out = to_message(completion({"content": "x"}, finish, **extra))
    assert (out["stop_reason"], out["stop_sequence"]) == (reason, sequence)


@pytest.mark.parametrize(("arguments", "expected"), [
    ('{"a": 1}', {"a": 1}), ("", {}), ("not json", {}), ("[1]", {}), ({"a": 1}, {"a": 1})])
def test_tool_input(arguments: Any, expected: Any) -> None:
    assert tool_input(arguments) == expected


def test_an_empty_completion_is_still_a_message() -> None:
    Message.model_validate(to_message({}))
