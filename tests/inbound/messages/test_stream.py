"""The Messages stream relay: whole events on, usage and the end read off the few events that say them."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gateway.accounting.usage import Usage
from gateway.inbound.messages.events import event
from gateway.inbound.messages.stream import MessagesRelay, of_messages
from gateway.state.base import MOST

START = event("message_start", {"message": {"id": "msg_1", "usage": {
    "input_tokens": 10, "output_tokens": 1, "cache_read_input_tokens": 4, "cache_creation_input_tokens": 2}}})
DELTA = event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": "message_delta"}})
END = event("message_delta", {"delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 9}}) + \
    event("message_stop", {})


def test_usage_and_stop() -> None:
    relay = MessagesRelay()
    out = relay.feed(START) + relay.feed(DELTA) + relay.feed(END)
    assert out == START + DELTA + END
    assert relay.stopped
    assert relay.usage == {"input_tokens": 10, "output_tokens": 9, "cache_read_input_tokens": 4,
                           "cache_creation_input_tokens": 2}
    assert relay.tokens() == Usage(16, 9, cache_read_tokens=4, cache_write_tokens=2)


def test_events_cut_anywhere_go_on_whole() -> None:
    relay = MessagesRelay()
    data = START + DELTA + END
    out = b"".join(relay.feed(data[i:i + 7]) for i in range(0, len(data), 7))
    assert out == data
    assert relay.stopped


def test_an_error_event_is_noted() -> None:
    relay = MessagesRelay()
    relay.feed(START + b"event: error\ndata: " + orjson.dumps(
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}) + b"\n\n")
    assert relay.error == {"type": "overloaded_error", "message": "Overloaded"}
    assert not relay.stopped


def test_of_messages() -> None:
    assert of_messages({"input_tokens": 3, "output_tokens": 2}) == Usage(3, 2)
    assert of_messages({"input_tokens": 3, "cache_read_input_tokens": 40, "cache_creation_input_tokens": 5,
                        "output_tokens": 2}) == Usage(48, 2, cache_read_tokens=40, cache_write_tokens=5)
    assert of_messages({"input_tokens": 0, "cache_creation_input_tokens": 7, "output_tokens": 1}) == Usage(7, 1, 0, 7)
    assert of_messages(None) == Usage()
    assert of_messages({"input_tokens": True, "output_tokens": "2"}) == Usage()


@pytest.mark.parametrize(("usage", "counted"), [
    ({"input_tokens": 3, "cache_read_input_tokens": -4, "cache_creation_input_tokens": "5"}, Usage(3)),
    ({"input_tokens": 3, "cache_read_input_tokens": None, "cache_creation_input_tokens": False}, Usage(3)),
    ({"input_tokens": 3.0, "cache_read_input_tokens": 4.0}, Usage(7, 0, 4)),  # 12.0 counts as 12, as for chat
    ({"input_tokens": 1, "cache_read_input_tokens": 10**19, "cache_creation_input_tokens": 10**19},
     Usage(MOST, 0, 0, MOST)),  # held to the bound, the parts within it, writes first
])
def test_of_messages_reads_cache_counts_as_the_other_counts(usage: dict[str, Any], counted: Usage) -> None:
    assert of_messages(usage) == counted


def test_one_hour_cache_writes_are_read_from_the_cache_creation_parts() -> None:
    usage = {"input_tokens": 3, "cache_read_input_tokens": 4, "cache_creation_input_tokens": 5, "output_tokens": 2,
             "cache_creation": {"ephemeral_5m_input_tokens": 1, "ephemeral_1h_input_tokens": 4}}
    assert of_messages(usage) == Usage(12, 2, 4, 5, 4)
    lying = {**usage, "cache_creation": {"ephemeral_1h_input_tokens": 50}}  # more one-hour writes than writes
    assert of_messages(lying) == Usage(12, 2, 4, 5, 5)
    assert of_messages({**usage, "cache_creation": "many"}) == Usage(12, 2, 4, 5)


def test_a_streams_one_hour_cache_writes_are_counted() -> None:
    start = event("message_start", {"message": {"id": "msg_1", "usage": {
        "input_tokens": 10, "output_tokens": 1, "cache_creation_input_tokens": 6,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 6}}}})
    relay = MessagesRelay()
    relay.feed(start + DELTA + END)
    assert relay.tokens() == Usage(16, 9, 0, 6, 6)
