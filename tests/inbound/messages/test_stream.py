"""The Messages stream relay: whole events on, usage and the end read off the few events that say them."""

from __future__ import annotations

import orjson

from gateway.accounting.usage import Usage
from gateway.inbound.messages.events import event
from gateway.inbound.messages.stream import MessagesRelay, of_messages

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
    assert relay.tokens() == Usage(16, 9)


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
    assert of_messages(None) == Usage()
    assert of_messages({"input_tokens": True, "output_tokens": "2"}) == Usage()
