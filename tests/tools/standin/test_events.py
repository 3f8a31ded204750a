"""The stand-ins' events read back as the gateway's own SSE reader reads them."""

from __future__ import annotations

from gateway.sse import payload_of
from gateway.tools.standin import chat_events, chunk, event, named_event, usage


def test_an_event_is_one_data_line_and_a_blank_line() -> None:
    assert event({"a": 1}) == b'data: {"a":1}\n\n'


def test_a_named_event_carries_its_kind_twice() -> None:
    made = named_event("response.created", {"n": 1})
    assert made.startswith(b"event: response.created\ndata: ")
    assert payload_of(made[:-2]) == {"type": "response.created", "n": 1}


def test_a_chunk_with_a_role_opens_with_empty_content() -> None:
    assert payload_of(chunk("m", role=True)[:-2])["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert payload_of(chunk("m", finish="stop")[:-2])["choices"][0] == {"index": 0, "delta": {},
                                                                        "finish_reason": "stop"}


def test_a_usage_event_has_no_choices_and_adds_up() -> None:
    payload = payload_of(usage("m", 7, 3)[:-2])
    assert payload["choices"] == []
    assert payload["usage"] == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}


def test_chat_events_are_role_words_finish_and_usage() -> None:
    events = [payload_of(e[:-2]) for e in chat_events("m", ["a ", "b "])]
    assert len(events) == 5
    assert [e["choices"][0]["delta"].get("content") for e in events[1:3]] == ["a ", "b "]
    assert events[3]["choices"][0]["finish_reason"] == "stop"
    assert events[4]["usage"]["completion_tokens"] == 2
    assert len(chat_events("m", ["a "], role=False, finish=False, with_usage=False)) == 1
