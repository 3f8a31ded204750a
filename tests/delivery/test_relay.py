"""The relay: whole events out byte for byte however the bytes come, usage found and stripped, the stream's end seen."""

from __future__ import annotations

import orjson
import pytest

from gateway.delivery.relay import SseRelay, Transcript, _data_ok, _well_formed
from gateway.sse import DONE_EVENT
from tests.test_sse import PASSED


def events(strip: bool) -> bytes:
    chunk = {"id": "c", "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}], "usage": None}
    last = {"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": None}
    usage = {"id": "c", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}
    parts = [chunk, chunk, last, usage]
    return b"".join(b"data: " + orjson.dumps(p) + b"\n\n" for p in parts) + b"data: [DONE]\n\n"



@pytest.mark.parametrize("size", [1, 2, 7, 50, 10_000])
@pytest.mark.parametrize("strip", [True, False])
def test_any_cut_gives_the_same_events(size: int, strip: bool) -> None:
    data = events(strip)
    relay = SseRelay(strip_usage=strip)
    out = b"".join(relay.feed(data[i:i + size]) for i in range(0, len(data), size))
    assert relay.usage == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    assert relay.finished
    assert relay.done
    assert relay.leftover == b""
    assert (b'"choices":[]' in out) is not strip
    assert out.endswith(b"data: [DONE]\n\n")
    assert out.count(b"\n\n") == (4 if strip else 5)



def test_an_unfinished_event_waits() -> None:
    relay = SseRelay(strip_usage=True)
    assert relay.feed(b'data: {"choices": [') == b""
    assert relay.leftover == b'data: {"choices": ['
    assert not relay.finished



@pytest.mark.parametrize("size", [1, 5, 1 << 20])
@pytest.mark.parametrize("transcript", [False, True], ids=["relay", "transcript"])
def test_well_formed_events_of_every_field_pass_byte_for_byte(size: int, transcript: bool) -> None:
    data = b"".join(PASSED)
    relay = SseRelay(strip_usage=True, transcript=Transcript() if transcript else None)
    assert b"".join(relay.feed(data[i:i + size]) for i in range(0, len(data), size)) == data
    assert relay.dropped == 0
    if transcript:
        assert relay.transcript is not None
        assert relay.transcript.text == "hi"



def test_only_events_with_data_count_as_carrying_it() -> None:
    relay = SseRelay(strip_usage=True)
    for keepalive in (b": keepalive\n\n", b"event: ping\n\n", b"\n\n", b"id: 4\nretry: 10\n\n"):
        relay.feed(keepalive)
        assert not relay.carried, keepalive
    relay.feed(b'data: {"choices": []}\n\n')
    assert relay.carried



def test_blank_lines_between_events_are_no_malformed_event() -> None:
    relay = SseRelay(strip_usage=True)
    assert relay.feed(b'\n\ndata: {"a": 1}\n\n\n\n') == b'data: {"a": 1}\n\n'
    assert relay.dropped == 0



def test_done_without_the_space_ends_the_stream() -> None:
    relay = SseRelay(strip_usage=True)
    assert relay.feed(b"data:[DONE]\n\n") == b"data:[DONE]\n\n"
    assert relay.done



def test_a_multi_line_usage_event_is_read_and_stripped() -> None:
    relay = SseRelay(strip_usage=True)
    event = b'data: {"choices": [],\ndata: "usage": {"prompt_tokens": 3, "completion_tokens": 2}}\n\n'
    assert relay.feed(event + DONE_EVENT) == DONE_EVENT
    assert relay.usage == {"prompt_tokens": 3, "completion_tokens": 2}


@pytest.mark.parametrize("bad", [b"data: nope\n\n", b'data: {"a": 1\n\n', b"data: x}\n\n", b"event: x\ndata: {}\n\n",
                                 b'data: {"c": 3}\ndata: more\n\n'])
def test_a_read_of_many_events_passes_whole_only_when_every_one_is_well_formed(bad: bytes) -> None:
    good = b'data: {"a": 1}\n\ndata:{"b": 2}\n\n' + DONE_EVENT
    assert SseRelay(strip_usage=False).feed(good) == good
    relay = SseRelay(strip_usage=False)
    out = relay.feed(b'data: {"a": 1}\n\n' + bad + b'data: {"b": 2}\n\n')
    assert b'{"a": 1}' in out
    assert b'{"b": 2}' in out
    if bad.startswith(b"event:"):  # a known field: kept, as one well-formed event
        assert relay.dropped == 0
    else:
        assert relay.dropped == 1
        assert bad not in out


def _each_well_formed(complete: bytes) -> bool:
    """The definition _well_formed's one pass must agree with: event by event."""
    events = complete[:-2].split(b"\n\n")
    return all(b"\n" not in e and e.startswith(b"data:") and _data_ok(e[5:].lstrip(b" ")) for e in events)


@pytest.mark.parametrize("events", [
    b'data: {"a": 1}\n\n', b'data:{"a": 1}\n\n', b'data:  {"a": 1}\n\n', b"data: [DONE]\n\n", b"data:[DONE]\n\n",
    b"data: {}\n\n", b'data: {"a": 1}\n\ndata: [DONE]\n\n', b'data: [DONE]\n\ndata: {"a": 1}\n\n',
    b'data: {"a": 1}\ndata: {"b": 2}\n\n', b": keepalive\n\n", b'data: {"a": 1}\n\n\ndata: {"b": 2}\n\n',
    b'data: {"a": 1} \n\n', b'data: {"a": 1}\n\ndata: [DONE]x\n\n', b'event: x\ndata: {"a": 1}\n\n',
    b'data: {"a": "}"\n\n', b"data: nope\n\n", b'id: 1\n\n', b'data: {"a": 1}\r\n\r\n',
])
def test_the_one_pass_well_formed_check_agrees_with_the_event_by_event_one(events: bytes) -> None:
    assert _well_formed(events) is _each_well_formed(events)


def test_usage_events_are_read_wherever_they_are_and_only_a_usage_only_one_is_stripped() -> None:
    before = b'data: {"choices": [{"delta": {"content": "a"}}]}\n\n'
    with_choices = b'data: {"choices": [{"delta": {}}], "usage": {"prompt_tokens": 1, "completion_tokens": 1}}\n\n'
    only = b'data: {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 7}}\n\n'
    relay = SseRelay(strip_usage=True)
    assert relay.feed(before + with_choices + only + DONE_EVENT) == before + with_choices + DONE_EVENT
    assert relay.usage == {"prompt_tokens": 5, "completion_tokens": 7}  # the last one read
    assert relay.stripped is not None
    kept = SseRelay(strip_usage=False)
    assert kept.feed(before + only + DONE_EVENT) == before + only + DONE_EVENT
    assert kept.usage == {"prompt_tokens": 5, "completion_tokens": 7}


def test_a_usage_event_cut_across_reads_is_read_once_whole() -> None:
    event = b'data: {"choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 3}}\n\n'
    relay = SseRelay(strip_usage=True)
    assert relay.feed(event[:20]) == b""
    assert relay.feed(event[20:] + DONE_EVENT) == DONE_EVENT
    assert relay.usage == {"prompt_tokens": 2, "completion_tokens": 3}
