"""Server-sent events: framed, parsed and written here for every path, and relayed whole as they arrive.

The wire format is the WHATWG HTML standard's (9.2, "Server-sent events"): lines end in LF, CRLF or CR; a blank
line ends an event; `data:` lines are joined with LF; one space after a field's colon is dropped; a line that
starts with a colon is a comment. Upstream bytes have their line ends made LF once (`line_feeds`, in the reader),
and every event the relay passes on goes out byte for byte as it came; only events the gateway rewrites (a
continued part's chunks, the usage it sums) are written again, by `frame`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

USAGE = re.compile(rb'"usage"\s*:\s*\{')
FINISH = re.compile(rb'"finish_reason"\s*:\s*"')
RESPONSE_END = re.compile(rb'"type"\s*:\s*"response\.(?:completed|incomplete|failed)"')  # the Responses API
DONE_LINES = (b"data: [DONE]", b"data:[DONE]")
SEQUENCE = re.compile(rb'"sequence_number":\s*(\d+)')
DONE_EVENT = b"data: [DONE]\n\n"
FIELDS = (b"data:", b":", b"event:", b"id:", b"retry:")
EVENT_END = b"\n\n"


@dataclass(frozen=True, slots=True)
class Event:
    """One dispatched event as a browser's EventSource sees it: its type, data, and the last event id then."""

    data: bytes
    event: bytes = b"message"
    id: bytes = b""
    retry: int | None = None


def line_feeds(data: bytes) -> tuple[bytes, bytes]:
    """data with its CRLF and lone CR line ends made LF, and a final CR held back (it may be half a CRLF).

    A CR is never inside an event's data (JSON escapes it), so every one ends a line; the one that ends a read
    waits for the next, which may begin with the LF of the same line end.
    """
    carry = b""
    if data.endswith(b"\r"):
        data, carry = data[:-1], b"\r"
    return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n"), carry


def complete_end(data: bytes) -> int:
    """Where the last complete event in LF-ended data ends (just after its blank line), or -1 when none does."""
    end = data.rfind(EVENT_END)
    return end + len(EVENT_END) if end >= 0 else -1


def split(events: bytes) -> list[bytes]:
    """The events of LF-ended, complete events, each without its blank line (blank lines between them left out)."""
    return [event for event in events.split(EVENT_END) if event.strip(b"\n")]


def joined(events: Iterable[bytes]) -> bytes:
    """Events (each without its blank line, as split gives them) written out whole again."""
    return b"".join(event + EVENT_END for event in events)


def _field(line: bytes) -> tuple[bytes, bytes]:
    """A line's field name and value: the value after the first colon, less one space (no colon: no value)."""
    name, colon, value = line.partition(b":")
    return name, (value[1:] if value.startswith(b" ") else value) if colon else b""


def data_of(event: bytes) -> bytes | None:
    """An event's data: its data lines' values joined with LF; None when it has no data line."""
    values = [_field(line)[1] for line in event.split(b"\n") if line.startswith(b"data")
              and _field(line)[0] == b"data"]
    return b"\n".join(values) if values else None


def payload_of(event: bytes) -> Any:
    """The JSON of an event's data, or None when it holds none."""
    data = data_of(event)
    if data is None:
        return None
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return None


def has_done(events: bytes) -> bool:
    """Whether LF-ended events hold the line `data: [DONE]` (found by substring: a regex anchored at line starts
    tries every byte of a read, hundreds of microseconds for a whole stream's)."""
    at = events.find(b"[DONE]")
    while at >= 0:
        end = at + 6
        if events[events.rfind(b"\n", 0, at) + 1:end] in DONE_LINES and events[end:end + 1] in (b"\n", b""):
            return True
        at = events.find(b"[DONE]", end)
    return False


def carries_data(events: bytes) -> bool:
    """Whether whole events hold a data field: a comment (`: keepalive`) or a bare event/id/retry line does not."""
    return events.startswith(b"data:") or b"\ndata:" in events


def frame(data: bytes, event: bytes | None = None, id: bytes | None = None) -> bytes:
    """One event written out: its type and id when given, and a data line per line of data."""
    head = (b"event: " + event + b"\n" if event is not None else b"") + (b"id: " + id + b"\n" if id is not None
                                                                         else b"")
    return head + b"".join(b"data: " + line + b"\n" for line in data.split(b"\n")) + b"\n"


def data_event(data: bytes) -> bytes:
    """One event of one line of data (JSON, say, which holds no line end): the common case, written fast."""
    return b"data: " + data + EVENT_END


def with_data(event: bytes, data: bytes) -> bytes:
    """event (without its blank line) with its data replaced by data, its other fields and comments kept."""
    lines = event.split(b"\n")
    at = next((i for i, line in enumerate(lines) if _field(line)[0] == b"data"), len(lines))
    kept = [line for line in lines if _field(line)[0] != b"data"]
    return b"\n".join([*kept[:at], *frame(data)[:-2].split(b"\n"), *kept[at:]])


class Decoder:
    """Parses an SSE byte stream as the standard says, however it is cut: bytes in, dispatched events out."""

    __slots__ = ("_carry", "_data", "_event", "_last_id", "_line", "_retry", "_started")

    def __init__(self) -> None:
        self._carry = b""
        self._line = b""
        self._started = False
        self._data: list[bytes] = []
        self._event = b""
        self._last_id = b""
        self._retry: int | None = None

    def feed(self, chunk: bytes) -> Iterator[Event]:
        """The events chunk completes."""
        text, self._carry = line_feeds(self._carry + chunk)
        *lines, self._line = (self._line + text).split(b"\n")
        if lines and not self._started:
            self._started = True
            lines[0] = lines[0].removeprefix(b"\xef\xbb\xbf")  # a byte order mark may open the stream
        for line in lines:
            event = self._take(line)
            if event is not None:
                yield event

    def end(self) -> Iterator[Event]:
        """The event a CR held back at the end of the stream completes; an event without its blank line is lost."""
        if self._carry:
            self._carry = b""
            yield from self.feed(b"\n")

    def _take(self, line: bytes) -> Event | None:
        if not line:
            return self._dispatch()
        if line.startswith(b":"):
            return None
        name, value = _field(line)
        if name == b"data":
            self._data.append(value)
        elif name == b"event":
            self._event = value
        elif name == b"id" and b"\0" not in value:
            self._last_id = value
        elif name == b"retry" and value.isdigit():
            self._retry = int(value)
        return None

    def _dispatch(self) -> Event | None:
        data, event, self._data, self._event = self._data, self._event, [], b""
        if not data:
            return None
        return Event(b"\n".join(data), event or b"message", self._last_id, self._retry)


class EventBound:
    """Cuts a byte stream after its last complete event and measures the event still open, for a size limit.

    The upstream's reader (gateway/upstreams/bounded.py) runs every stream through one, so the relay
    below only ever holds one bounded, unfinished event.
    """

    __slots__ = ("_open", "_parts", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._parts: list[bytes] = []
        self._open = 0

    def feed(self, chunk: bytes) -> bytes | None:
        """The complete events chunk finishes (b"" for none yet); None when the open event passed the limit."""
        tail = self._parts[-1][-(len(EVENT_END) - 1):] if self._parts else b""
        end = complete_end(tail + chunk) - len(tail)
        if end < 0:
            self._parts.append(chunk)
            self._open += len(chunk)
            return None if self._open > self.limit else b""
        complete = b"".join([*self._parts, chunk[:end]]) if self._parts else chunk[:end]
        rest = chunk[end:]
        self._parts = [rest] if rest else []
        self._open = len(rest)
        return None if self._open > self.limit else complete

    def rest(self) -> bytes:
        """The bytes of an event the stream never finished."""
        rest = b"".join(self._parts)
        self._parts, self._open = [], 0
        return rest


def usage_event(template: dict[str, Any], usage: dict[str, int]) -> bytes:
    """A final usage event in OpenAI's shape."""
    return data_event(orjson.dumps({**template, "choices": [], "usage": usage}))


def error_event(message: str, code: str) -> bytes:
    """One in-band error event in OpenAI's error shape, for a stream that cannot be finished."""
    return data_event(orjson.dumps({"error": {"message": message, "type": "server_error", "code": code,
                                              "param": None}}))


def response_failed(first: bytes, last: bytes, message: str) -> bytes:
    """The Responses API's ending of a stream that cannot be finished, in that API's shape: `response.failed`
    carrying the response its `response.created` event began (first), numbered after the last event sent; an
    `error` event when no response was seen."""
    sequence = max((int(n) for n in SEQUENCE.findall(last)), default=-1) + 1
    response = created_response(first)
    if response is None:
        error = {"type": "error", "code": "server_error", "message": message, "param": None,
                 "sequence_number": sequence}
        return frame(orjson.dumps(error), b"error")
    failed = {**response, "status": "failed", "error": {"code": "server_error", "message": message}}
    return frame(orjson.dumps({"type": "response.failed", "sequence_number": sequence, "response": failed}),
                 b"response.failed")


def created_response(events: bytes) -> dict[str, object] | None:
    """The response object of the `response.created` event among whole events, if one is there."""
    for event in split(events):
        if b"response.created" in event:
            payload = payload_of(event)
            response = payload.get("response") if isinstance(payload, dict) else None
            return response if isinstance(response, dict) else None
    return None
