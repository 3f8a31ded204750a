"""The SSE relay: whole events out, usage found and stripped, however the bytes are cut."""

from __future__ import annotations

import orjson
import pytest

from gateway.sse import SseRelay, error_event


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
