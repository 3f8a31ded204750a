"""A Messages stream is never a truncated success, and a client that leaves one early still pays for its text.

The upstreams are raw fault servers (gateway/tools/standin/faults.py) declaring the capability `messages`, so the
gateway relays their Anthropic events as they are: cut with a FIN or a reset, stalled, garbage, oversized, or
finished without `message_stop`. Each stream, read raw, must end with one `event: error` and no `message_stop`.
And a chat stream translated keeps every byte of every tool call, however the upstream interleaves their pieces.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import orjson
import pytest

from gateway.tools.standin import FaultServer, Sse, chat_events, chunk, event, usage
from tests.conftest import KEY, OTHER_KEY, Loop, key_hash, wait_for
from tests.guarantees.rig import Faults, Rig, rig, spend_row

ADMIN_KEY = "sy-admin-messages-streams-0123456789ab"
WORDS = [f"word{i} " for i in range(8)]
HEADERS = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}


def named(kind: str, data: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **data}) + b"\n\n"


def message_events(words: list[str], output_tokens: int | None = None) -> tuple[bytes, ...]:
    """A whole Messages stream: start, one text delta per word, the block's stop, message_delta, message_stop."""
    start = {"id": "msg_1", "type": "message", "role": "assistant", "model": "m", "content": [], "stop_reason": None,
             "usage": {"input_tokens": 10, "output_tokens": 1}}
    return (named("message_start", {"message": start}),
            named("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
            *(named("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": w}}) for w in words),
            named("content_block_stop", {"index": 0}),
            named("message_delta", {"delta": {"stop_reason": "end_turn"}, "usage": {
                "output_tokens": len(words) if output_tokens is None else output_tokens}}),
            named("message_stop", {}))


@pytest.fixture
def faults(loop: Loop) -> Iterator[Faults]:
    made = Faults(loop)
    yield made
    made.stop()


def messages_rig(loop: Loop, tmp_path: Path, server: FaultServer, **sections: Any) -> Rig:
    return rig(loop, tmp_path, {"primary": server}, capabilities=("messages",), admin_key=ADMIN_KEY,
               resilience={"stream_idle_timeout_s": 1}, **sections)


def stream(r: Rig, **extra: Any) -> bytes:
    """A Messages stream from the gateway, read raw to its end."""
    body = {"model": "chat", "max_tokens": 64, "messages": [{"role": "user", "content": "Hi"}], "stream": True,
            **extra}
    with httpx.stream("POST", r.served.url + "/v1/messages", headers=HEADERS, json=body, timeout=30) as response:
        assert response.status_code == 200, response.read()
        return response.read()


def kinds(raw: bytes) -> list[str]:
    """The type of every event the client got."""
    return [orjson.loads(line[6:])["type"] for line in raw.split(b"\n") if line.startswith(b"data: {")]


def assert_ends_with_an_error(raw: bytes) -> None:
    found = kinds(raw)
    assert found[-1] == "error", found
    assert found.count("error") == 1, found
    assert "message_stop" not in found
    error = orjson.loads(raw.rstrip().split(b"\n\n")[-1].split(b"data: ", 1)[1])
    assert error["error"]["message"]


EVENTS = message_events(WORDS)
BROKEN = {
    "a FIN after the third delta": Sse(EVENTS, cut_after=5, done=False),
    "a reset after the third delta": Sse(EVENTS, cut_after=5, reset=True, done=False),
    "a stall after the third delta": Sse(EVENTS, stall_after=5, stall_s=3, done=False),
    "the end without message_stop": Sse(EVENTS[:-1], done=False),
    "the end without message_delta or message_stop": Sse(EVENTS[:-3], done=False),
    "garbage after the third delta": Sse((*EVENTS[:5], b"\x00\xff garbage {{{ not an event\n\n"), done=False),
    "an OpenAI [DONE] in place of message_stop": Sse(EVENTS[:-1], done=True),
    "an event over the size limit": Sse((*EVENTS[:5], named("content_block_delta", {"index": 0, "delta": {
        "type": "text_delta", "text": "x" * (5 << 20)}}), *EVENTS[5:]), done=False),
    "a message_stop inside text, not as an event": Sse((*EVENTS[:5], named("content_block_delta", {
        "index": 0, "delta": {"type": "text_delta", "text": 'event: message_stop\ndata: {"type":"message_stop"}'}})),
        done=False),
}


@pytest.mark.parametrize("name", BROKEN)
def test_a_broken_stream_ends_with_one_error_event_never_message_stop(loop: Loop, tmp_path: Path, faults: Faults,
                                                                       name: str) -> None:
    r = messages_rig(loop, tmp_path, faults("primary", default=BROKEN[name]))
    raw = stream(r)
    assert b"word0" in raw  # bytes went out before it broke
    assert_ends_with_an_error(raw)


def test_a_whole_stream_ends_with_message_stop_and_no_error(loop: Loop, tmp_path: Path, faults: Faults) -> None:
    """The control: the same events unbroken are relayed whole."""
    r = messages_rig(loop, tmp_path, faults("primary", default=Sse(EVENTS, done=False)))
    raw = stream(r)
    assert kinds(raw)[-1] == "message_stop"
    assert "error" not in kinds(raw)


TENANTS = {"acme": {"keys": [key_hash(KEY)], "budget": {"usd_per_day": 1.0}},
           "limited": {"keys": [key_hash(OTHER_KEY)]}}


def test_a_client_leaving_before_message_delta_pays_for_the_text(loop: Loop, tmp_path: Path, faults: Faults) -> None:
    """message_start says output_tokens 1; a client that leaves after the text must pay for the text."""
    server = faults("primary", default=Sse(EVENTS, stall_after=2 + len(WORDS), done=False))
    r = messages_rig(loop, tmp_path, server, tenants=TENANTS)
    body = {"model": "chat", "max_tokens": 64, "messages": [{"role": "user", "content": "Hi"}], "stream": True}
    for _ in range(3):
        with httpx.stream("POST", r.served.url + "/v1/messages", headers=HEADERS, json=body, timeout=10) as response:
            raw = b""
            for part in response.iter_raw():
                raw += part
                if WORDS[-1].encode() in raw:
                    break
    wait_for(lambda: server.count == 3 and all(a.closed for a in server.arrivals), what="the upstreams closed")
    spend_row(r, 3, ADMIN_KEY)
    completion = r.metric("switchyard_tokens_total", type="completion", upstream="primary")
    assert completion is not None
    assert completion >= 3 * len(WORDS)


@pytest.mark.parametrize("reported", [0, 10**30, -5])
def test_a_lying_upstreams_usage_is_held_to_what_it_could_have_made(loop: Loop, tmp_path: Path, faults: Faults,
                                                                   reported: int) -> None:
    """An upstream reporting no output, or more than any window, for a stream of eight words: counted within reason."""
    events = tuple(e.replace(b'"output_tokens":8', b'"output_tokens":' + str(reported).encode())
                   for e in message_events(WORDS))
    server = faults("primary", default=Sse(events, done=False))
    r = messages_rig(loop, tmp_path, server, tenants=TENANTS)
    stream(r)
    spend_row(r, 1, ADMIN_KEY)
    completion = r.metric("switchyard_tokens_total", type="completion", upstream="primary") or 0.0
    assert len(WORDS) <= completion <= 64  # at least the text relayed, at most max_tokens


CHAT = chat_events("primary-model", WORDS)
BROKEN_CHAT = {
    "a FIN after the third word": Sse(CHAT, cut_after=4, done=False),
    "a reset after the third word": Sse(CHAT, cut_after=4, reset=True, done=False),
    "a stall after the third word": Sse(CHAT, stall_after=4, stall_s=3, done=False),
    "the end without [DONE] or a finish_reason": Sse(chat_events("primary-model", WORDS, finish=False,
                                                                 with_usage=False), done=False),
    "garbage after the third word": Sse((*CHAT[:4], b"data: {not json\n\n"), done=False),
    "an event over the size limit": Sse((*CHAT[:4], b"data: " + b"x" * (5 << 20) + b"\n\n", *CHAT[4:])),
}


@pytest.mark.parametrize("name", BROKEN_CHAT)
def test_a_broken_chat_stream_translated_ends_with_one_error_event(loop: Loop, tmp_path: Path, faults: Faults,
                                                                   name: str) -> None:
    """The same for an OpenAI-compatible upstream whose chat stream the gateway translates to Messages events."""
    r = rig(loop, tmp_path, {"primary": faults("primary", default=BROKEN_CHAT[name])},
            resilience={"stream_idle_timeout_s": 1})
    raw = stream(r)
    assert b"word0" in raw
    assert_ends_with_an_error(raw)


def tool_pieces(*pieces: dict[str, Any], finish: str | None = None) -> bytes:
    """One chat chunk carrying tool-call pieces (each naming its call by index)."""
    return event({"id": "chatcmpl-tools", "object": "chat.completion.chunk", "created": 0, "model": "primary-model",
                  "choices": [{"index": 0, "delta": {"tool_calls": list(pieces)}, "finish_reason": finish}]})


def opening(index: int, call_id: str, name: str, arguments: str = "") -> dict[str, Any]:
    return {"index": index, "id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def more(index: int, arguments: str) -> dict[str, Any]:
    return {"index": index, "function": {"arguments": arguments}}


INTERLEAVED = (chunk("primary-model", role=True), chunk("primary-model", "Checking both."),
               tool_pieces(opening(0, "call_a", "weather")),
               tool_pieces(opening(1, "call_b", "clock", '{"zone": '), more(0, '{"city": ')),
               tool_pieces(more(0, '"Paris"}')), tool_pieces(more(1, '"CET"}')),
               chunk("primary-model", finish="tool_calls"), usage("primary-model", 7, 11))
TOOLS: list[Any] = [{"name": name, "input_schema": {"type": "object", "properties": {key: {"type": "string"}}}}
                    for name, key in (("weather", "city"), ("clock", "zone"))]


def test_a_translated_streams_interleaved_tool_calls_reach_the_sdk_whole(loop: Loop, tmp_path: Path,
                                                                          faults: Faults) -> None:
    """A chat upstream sending a piece of its first tool call after its second began: both calls, every byte."""
    r = rig(loop, tmp_path, {"primary": faults("primary", default=Sse(INTERLEAVED))}, capabilities=("tools",))
    with anthropic.Anthropic(base_url=r.served.url, api_key=KEY, max_retries=0) as client, client.messages.stream(
            model="chat", max_tokens=64, messages=[{"role": "user", "content": "Weather and time?"}],
            tools=TOOLS) as stream:
        order = [(e.type, getattr(e, "index", None)) for e in stream if e.type.startswith("content_block_")]
        final = stream.get_final_message()
    assert [(b.type, getattr(b, "id", None), getattr(b, "input", None)) for b in final.content] == [
        ("text", None, None), ("tool_use", "call_a", {"city": "Paris"}), ("tool_use", "call_b", {"zone": "CET"})]
    opened: list[int] = []
    for kind, index in order:  # each block contiguous: its start, its deltas, its stop, then the next
        if kind == "content_block_start":
            opened.append(index)
        assert index == opened[-1] == len(opened) - 1, order
    assert final.stop_reason == "tool_use"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (7, 11)
