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


# --- tool calls whose pieces interleave ------------------------------------------------------------------------------


def blocks(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The content blocks a client assembles, each checked to be contiguous: its start, its deltas, its stop."""
    made: list[dict[str, Any]] = []
    open_: int | None = None
    for e in events:
        if e["type"] == "content_block_start":
            assert open_ is None, e
            assert e["index"] == len(made), e
            open_ = e["index"]
            made.append({**e["content_block"], "json": ""})
        elif e["type"] == "content_block_delta":
            assert e["index"] == open_, e
            delta = e["delta"]
            made[-1]["json"] += delta.get("partial_json", "")
            for key in ("text", "thinking"):
                if key in delta:
                    made[-1][key] += delta[key]
        elif e["type"] == "content_block_stop":
            assert e["index"] == open_, e
            open_ = None
    assert open_ is None
    return made


def piece(index: int, arguments: str = "", call_id: str | None = None, name: str | None = None) -> dict[str, Any]:
    """One piece of tool call index, as a chat stream's delta carries it."""
    function: dict[str, Any] = {"arguments": arguments}
    found: dict[str, Any] = {"index": index, "function": function}
    if call_id is not None:
        found.update(id=call_id, type="function")
        function["name"] = name
    return found


def calls(*pieces: dict[str, Any]) -> bytes:
    return chunk({"tool_calls": list(pieces)})


def tools(made: list[dict[str, Any]]) -> list[tuple[str, str, Any]]:
    return [(b["id"], b["name"], orjson.loads(b["json"] or "{}")) for b in made if b["type"] == "tool_use"]


def test_a_piece_of_an_earlier_call_after_a_later_one_started_is_kept() -> None:
    events = translate(calls(piece(0, "", "call_a", "weather")), calls(piece(0, '{"city": ')),
                       calls(piece(1, '{"tz": ', "call_b", "time")), calls(piece(0, '"Paris"}')),
                       calls(piece(1, '"UTC"}')), chunk({}, "tool_calls"), USAGE, DONE)
    assert tools(blocks(events)) == [("call_a", "weather", {"city": "Paris"}), ("call_b", "time", {"tz": "UTC"})]
    assert events[-2]["delta"]["stop_reason"] == "tool_use"


def test_several_calls_pieces_in_one_chunk_in_any_order_go_out_in_index_order() -> None:
    events = translate(chunk({"content": "Two at once."}),
                       calls(piece(2, '{"n": ', "call_c", "third"), piece(0, '{"n": ', "call_a", "first"),
                             piece(1, '{"n": 2}', "call_b", "second")),
                       calls(piece(2, "3}"), piece(0, "1"), piece(0, "}")), chunk({}, "tool_calls"), DONE)
    made = blocks(events)
    assert [b["type"] for b in made] == ["text", "tool_use", "tool_use", "tool_use"]
    assert made[0]["text"] == "Two at once."
    assert tools(made) == [("call_a", "first", {"n": 1}), ("call_b", "second", {"n": 2}),
                           ("call_c", "third", {"n": 3})]


def test_a_call_starting_before_a_lower_index_goes_out_first_without_losing_either() -> None:
    events = translate(calls(piece(1, '{"b": ', "call_b", "bee")), calls(piece(0, '{"a": 1}', "call_a", "ay")),
                       calls(piece(1, "2}")), chunk({}, "tool_calls"), DONE)
    assert tools(blocks(events)) == [("call_b", "bee", {"b": 2}), ("call_a", "ay", {"a": 1})]


def test_id_and_name_come_from_a_calls_first_piece() -> None:
    late = {"index": 1, "id": "call_other", "function": {"name": "other", "arguments": "}"}}
    events = translate(calls(piece(0, "{", "call_a", "weather")), calls(piece(1, "{", "call_b", "time")),
                       calls({"index": 0, "id": "call_other", "function": {"name": "other", "arguments": "}"}}),
                       calls(late), chunk({}, "tool_calls"), DONE)
    assert tools(blocks(events)) == [("call_a", "weather", {}), ("call_b", "time", {})]


def test_calls_whose_arguments_never_finish_are_still_whole_blocks() -> None:
    events = translate(calls(piece(0, '{"city": "Par', "call_a", "weather")), calls(piece(1, "", "call_b", "time")),
                       calls(piece(2, '{"q', "call_c", "search")), chunk({}, "length"), DONE)
    made = blocks(events)
    assert [(b["id"], b["json"]) for b in made] == [("call_a", '{"city": "Par'), ("call_b", ""), ("call_c", '{"q')]
    assert events[-2]["delta"]["stop_reason"] == "max_tokens"


def test_tool_calls_finished_with_stop_are_a_tool_use() -> None:
    events = translate(calls(piece(0, "{}", "call_a", "weather")), chunk({}, "stop"), DONE)
    assert events[-2]["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}


def test_the_first_calls_arguments_and_text_before_it_stream_live() -> None:
    translator = EventTranslator()
    translator.feed(chunk({"role": "assistant", "content": ""}))
    assert b"Checking" in translator.feed(chunk({"content": "Checking."}))
    assert b"input_json_delta" in translator.feed(calls(piece(0, '{"city', "call_a", "weather")))
    assert b"Paris" in translator.feed(calls(piece(0, '": "Paris"}')))


def test_text_after_a_tool_call_started_is_kept_whole() -> None:
    events = translate(calls(piece(0, '{"city": ', "call_a", "weather")), chunk({"content": "\n"}),
                       calls(piece(1, "{}", "call_b", "time")), chunk({"reasoning": "hm"}), chunk({"content": "ok"}),
                       calls(piece(0, '"Paris"}')), chunk({}, "tool_calls"), DONE)
    made = blocks(events)
    assert tools(made) == [("call_a", "weather", {"city": "Paris"}), ("call_b", "time", {})]
    assert [(b["type"], b.get("text"), b.get("thinking")) for b in made if b["type"] != "tool_use"] == [
        ("text", "\n", None), ("thinking", None, "hm"), ("text", "ok", None)]


def test_every_argument_piece_is_a_delta_and_usage_is_the_upstreams() -> None:
    events = translate(calls(piece(0, "{", "call_a", "weather"), piece(1, "{", "call_b", "time")),
                       calls(piece(1, "}")), calls(piece(0, "}")), chunk({}, "tool_calls"), USAGE, DONE)
    assert kinds(events).count("content_block_delta") == 4
    assert (events[-2]["usage"]["input_tokens"], events[-2]["usage"]["output_tokens"]) == (7, 4)
