"""Chat completions streams as Messages streams: each event valid by the anthropic SDK's types, in Anthropic's order."""

from __future__ import annotations

from typing import Any

import orjson
import pydantic
import pytest
from anthropic.types import RawMessageStreamEvent

from gateway.inbound.messages.events import ChatError, EventTranslator
from gateway.sse import payload_of

EVENTS: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(RawMessageStreamEvent)


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> bytes:
    payload: dict[str, Any] = {"id": "chatcmpl-9", "object": "chat.completion.chunk", "created": 0, "model": "qwen",
                               **extra}
    if delta is not None or finish is not None:
        payload["choices"] = [{"index": 0, "delta": delta or {}, "finish_reason": finish}]
    return b"data: " + orjson.dumps(payload) + b"\n\n"


USAGE = chunk(choices=[], usage={"prompt_tokens": 7, "completion_tokens": 4, "total_tokens": 11})
DONE = b"data: [DONE]\n\n"


def translate(*pieces: bytes) -> list[dict[str, Any]]:
    """Every event the translator makes of pieces (fed one by one), then its ending, each validated."""
    translator = EventTranslator()
    out = b"".join(translator.feed(piece) for piece in pieces)
    assert translator.done
    out += translator.end()
    events = []
    for raw in out.split(b"\n\n")[:-1]:
        name = raw.split(b"\n")[0].removeprefix(b"event: ").decode()
        payload = payload_of(raw)
        assert payload["type"] == name
        if name != "ping":
            EVENTS.validate_python(payload)
        events.append(payload)
    return events


def kinds(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


def test_text() -> None:
    events = translate(chunk({"role": "assistant", "content": ""}), chunk({"content": "Hel"}), chunk({"content": "lo"}),
                       chunk({}, "stop"), USAGE, DONE)
    assert kinds(events) == ["message_start", "ping", "content_block_start", "content_block_delta",
                             "content_block_delta", "content_block_stop", "message_delta", "message_stop"]
    assert events[0]["message"]["id"] == "msg_chatcmpl-9"
    assert "".join(e["delta"]["text"] for e in events if e["type"] == "content_block_delta") == "Hello"
    assert events[-2]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert events[-2]["usage"]["input_tokens"] == 7
    assert events[-2]["usage"]["output_tokens"] == 4


def test_reasoning_then_text_are_two_blocks() -> None:
    events = translate(chunk({"reasoning": "let me "}), chunk({"reasoning_content": "think"}),
                       chunk({"content": "42"}), chunk({}, "length"), DONE)
    starts = [e for e in events if e["type"] == "content_block_start"]
    assert [(s["index"], s["content_block"]["type"]) for s in starts] == [(0, "thinking"), (1, "text")]
    thinking = [e["delta"]["thinking"] for e in events if e.get("delta", {}).get("type") == "thinking_delta"]
    assert "".join(thinking) == "let me think"
    assert events[-2]["delta"]["stop_reason"] == "max_tokens"


def test_tool_calls_stream_as_input_json_deltas() -> None:
    first = {"index": 0, "id": "call_a", "type": "function", "function": {"name": "weather", "arguments": ""}}
    second = {"index": 1, "id": "call_b", "type": "function", "function": {"name": "time", "arguments": "{}"}}
    events = translate(chunk({"content": "Checking."}), chunk({"tool_calls": [first]}),
                       chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]}),
                       chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}),
                       chunk({"tool_calls": [second]}), chunk({}, "tool_calls"), USAGE, DONE)
    starts = [e["content_block"] for e in events if e["type"] == "content_block_start"]
    assert [(b["type"], b.get("id"), b.get("name")) for b in starts] == [
        ("text", None, None), ("tool_use", "call_a", "weather"), ("tool_use", "call_b", "time")]
    partial = [e["delta"]["partial_json"] for e in events if e["type"] == "content_block_delta" and e["index"] == 1]
    assert orjson.loads("".join(partial)) == {"city": "Paris"}
    assert kinds(events).count("content_block_stop") == 3
    assert events[-2]["delta"]["stop_reason"] == "tool_use"


def test_events_split_across_reads_and_joined_in_one() -> None:
    translator = EventTranslator()
    out = translator.feed(chunk({"content": "a"}) + chunk({"content": "b"}) + chunk({}, "stop") + DONE)
    assert out.count(b"event: content_block_delta") == 2
    assert translator.finished
    assert translator.done


def test_an_error_event_is_a_chat_error() -> None:
    translator = EventTranslator()
    translator.feed(chunk({"content": "a"}))
    with pytest.raises(ChatError, match="engine died"):
        translator.feed(b'data: {"error": {"message": "engine died", "type": "server_error"}}\n\n')


def test_an_unfinished_stream_is_not_finished() -> None:
    translator = EventTranslator()
    translator.feed(chunk({"content": "a"}))
    assert not translator.finished
