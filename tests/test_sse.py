"""SSE as the WHATWG standard writes it: the decoder, the event bound, framing and the error events."""

from __future__ import annotations

import orjson
import pytest

from gateway.sse import (
    Decoder,
    Event,
    EventBound,
    complete_end,
    data_of,
    error_event,
    frame,
    has_done,
    line_feeds,
    payload_of,
    response_failed,
    split,
    with_data,
)


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


# The WHATWG HTML standard's own examples (9.2 "Server-sent events"), as the Decoder parses them

STOCK_TICKER = b"data: YHOO\ndata: +2\ndata: 10\n\n"
COMMENTS = b": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n\n"
EMPTY_DATA = b"data\n\ndata\ndata\n\ndata:"
SPACING = b"data:test\n\ndata: test\n\n"
TYPED = b"event: add\ndata: 73857293\n\nevent: remove\ndata: 2153\n\nevent: add\ndata: 113411\n\n"
EXAMPLES = {
    "stock-ticker": (STOCK_TICKER, [Event(b"YHOO\n+2\n10")]),
    "comments": (COMMENTS, [Event(b"first event", id=b"1"), Event(b"second event"), Event(b" third event")]),
    "empty-data": (EMPTY_DATA, [Event(b""), Event(b"\n")]),  # the last block has no blank line: never dispatched
    "spacing": (SPACING, [Event(b"test"), Event(b"test")]),
    "event-types": (TYPED, [Event(b"73857293", b"add"), Event(b"2153", b"remove"), Event(b"113411", b"add")]),
}
LINE_ENDS = {"lf": b"\n", "crlf": b"\r\n", "cr": b"\r"}


def decoded(data: bytes, size: int) -> list[Event]:
    decoder = Decoder()
    found = [event for i in range(0, len(data), size) for event in decoder.feed(data[i:i + size])]
    return found + list(decoder.end())


@pytest.mark.parametrize("size", [1, 2, 3, 1 << 20])
@pytest.mark.parametrize("end", list(LINE_ENDS.values()), ids=list(LINE_ENDS))
@pytest.mark.parametrize("name", list(EXAMPLES))
def test_the_standards_examples_parse_as_it_says_with_any_line_end_however_cut(name: str, end: bytes,
                                                                                 size: int) -> None:
    data, expected = EXAMPLES[name]
    assert decoded(data.replace(b"\n", end), size) == expected


def test_a_cr_that_ends_the_stream_ends_its_line() -> None:
    assert decoded(b"data: last\r\r", 1 << 20) == [Event(b"last")]
    assert decoded(b"data: cut\r", 1 << 20) == []


def test_a_byte_order_mark_at_the_start_is_not_part_of_the_first_field() -> None:
    assert decoded(b"\xef\xbb\xbfdata: x\n\n", 1) == [Event(b"x")]


def test_retry_and_an_id_with_a_null_are_read_as_the_standard_says() -> None:
    assert decoded(b"retry: 3000\nid: 7\ndata: a\n\nid: 8\x00\nretry: soon\ndata: b\n\n", 4) == [
        Event(b"a", id=b"7", retry=3000), Event(b"b", id=b"7", retry=3000)]


@pytest.mark.parametrize("data", [b"plain", b"two\nlines", b"", b"{\"json\": true}", b"trailing\n"])
def test_frame_writes_what_the_decoder_reads_back(data: bytes) -> None:
    written = frame(data, b"update", b"42")
    assert decoded(written, 1) == [Event(data, b"update", b"42")]
    assert written.endswith(b"\n\n")


def test_data_of_joins_data_lines_with_a_line_feed_and_drops_one_space() -> None:
    assert data_of(b"data: YHOO\ndata:+2\ndata:  10") == b"YHOO\n+2\n 10"
    assert data_of(b": just a comment\nevent: ping") is None
    assert payload_of(b'id: 1\ndata: {"a":\ndata: [1, 2]}') == {"a": [1, 2]}


def test_with_data_keeps_the_other_fields_in_place() -> None:
    event = b"event: chunk\ndata: old\ndata: lines\nid: 9\n: note"
    assert with_data(event, b'{"new": 1}') == b'event: chunk\ndata: {"new": 1}\nid: 9\n: note'


def test_split_leaves_out_blank_lines_between_events() -> None:
    assert split(b"data: a\n\n\n\n: c\n\ndata: b\n\n") == [b"data: a", b": c", b"data: b"]


# Well-formed events of every field, and line ends made line feeds


PASSED = [
    b": keepalive\n\n",
    b'event: delta\nid: 3\ndata: {"choices": []}\n\n',
    b'data: {"choices":\ndata: [{"index": 0, "delta": {"content": "hi"}, "finish_reason": null}]}\n\n',
    b'data:{"no": "space"}\n\n',
    b"retry: 1000\n\n",
]


@pytest.mark.parametrize("end", [b"\r\n", b"\r"], ids=["crlf", "cr"])
def test_line_feeds_make_any_line_end_lf_even_split_across_reads(end: bytes) -> None:
    data = b"".join(PASSED).replace(b"\n", end)
    out, carry = b"", b""
    for i in range(len(data)):
        piece, carry = line_feeds(carry + data[i:i + 1])
        out += piece
    assert out + carry.replace(b"\r", b"\n") == b"".join(PASSED)


def test_the_error_events_are_events_the_decoder_reads() -> None:
    [chat] = decoded(error_event("broken", "stream_interrupted"), 1)
    assert orjson.loads(chat.data)["error"]["code"] == "stream_interrupted"
    [responses] = decoded(response_failed(b"", b'data: {"sequence_number": 4}\n\n', "cut"), 1)
    assert responses.event == b"error"
    assert orjson.loads(responses.data)["sequence_number"] == 5




@pytest.mark.parametrize(("events", "done"), [
    (b"data: [DONE]\n\n", True),
    (b"data:[DONE]\n\n", True),
    (b'data: {"a":1}\n\ndata: [DONE]', True),  # the line ends the read
    (b"event: end\ndata: [DONE]\n\n", True),
    (b': [DONE]\ndata: [DONE]\n\n', True),  # a comment that says it first
    (b'data: {"content":"[DONE]"}\n\n', False),
    (b"data:  [DONE]\n\n", False),
    (b"data: [DONE]!\n\n", False),
    (b": data: [DONE]\n\n", False),
    (b"", False),
])
def test_has_done_finds_only_a_whole_done_line(events: bytes, done: bool) -> None:
    assert has_done(events) is done
