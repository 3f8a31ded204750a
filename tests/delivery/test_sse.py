"""The SSE relay: whole events out, usage found and stripped, however the bytes are cut."""

from __future__ import annotations

import orjson
import pytest

from gateway.delivery.sse import EventBound, SseRelay, complete_end, error_event


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


def test_error_event_is_openai_shaped() -> None:
    body = orjson.loads(error_event("broken", "stream_interrupted")[6:])
    assert body == {"error": {"message": "broken", "type": "server_error", "code": "stream_interrupted", "param": None}}


def stream_of(events: int, size: int = 40) -> bytes:
    return b"".join(b"data: {\"n\": \"" + bytes([97 + i % 26]) * size + b"\"}\n\n" for i in range(events))


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 10_000])
def test_the_event_bound_cuts_only_after_whole_events_however_the_bytes_come(size: int) -> None:
    data = stream_of(20) + b'data: {"unfinished'
    bound = EventBound(limit=1000)
    pieces = [bound.feed(data[i:i + size]) for i in range(0, len(data), size)]
    assert None not in pieces
    assert all(p.endswith(b"\n\n") for p in pieces if p)
    assert b"".join(p for p in pieces if p) == stream_of(20)
    assert bound.rest() == b'data: {"unfinished'


def test_the_event_bound_finds_a_blank_line_split_across_two_chunks() -> None:
    bound = EventBound(limit=1000)
    assert bound.feed(b'data: {"a": 1}\n') == b""
    assert bound.feed(b'\ndata: {"b"') == b'data: {"a": 1}\n\n'
    assert bound.rest() == b'data: {"b"'


def test_an_event_that_grows_past_the_limit_without_ending_is_refused() -> None:
    bound = EventBound(limit=100)
    assert bound.feed(b"data: " + b"x" * 90) == b""
    assert bound.feed(b"x" * 20) is None


def test_a_long_run_of_small_events_never_trips_the_bound() -> None:
    bound = EventBound(limit=100)
    data = stream_of(10_000, size=60)  # 670 KB of events of 70 bytes
    assert all(bound.feed(data[i:i + 4096]) is not None for i in range(0, len(data), 4096))
    assert bound.rest() == b""


def test_complete_end_is_where_the_relay_cuts() -> None:
    assert complete_end(b'data: {}\n\ndata: {"x') == len(b"data: {}\n\n")
    assert complete_end(b'data: {"x') == -1
