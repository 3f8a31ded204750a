"""Relay server-sent events as they arrive: whole events only, malformed ones dropped, usage and finish noted."""

from __future__ import annotations

import re
from typing import Any

import orjson

USAGE = re.compile(rb'"usage"\s*:\s*\{')
FINISH = re.compile(rb'"finish_reason"\s*:\s*"')
RESPONSE_END = re.compile(rb'"type"\s*:\s*"response\.(?:completed|incomplete|failed)"')  # the Responses API
DONE = b"data: [DONE]"
DONE_EVENT = b"data: [DONE]\n\n"
FIELDS = (b"data:", b":", b"event:", b"id:", b"retry:")
EVENT_END = b"\n\n"


def complete_end(data: bytes) -> int:
    """Where the last complete event in data ends (just after its blank line), or -1 when none does."""
    end = data.rfind(EVENT_END)
    return end + len(EVENT_END) if end >= 0 else -1


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


class Transcript:
    """The assistant text a stream has delivered so far, so a cut stream can be continued from it."""

    __slots__ = ("continuable", "parts")

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.continuable = True

    @property
    def text(self) -> str:
        """Everything sent so far, exactly."""
        return "".join(self.parts)

    def note(self, payload: Any) -> bool | None:
        """Take one event's content; False when it carries nothing new (a role-only opening delta), None when
        it is malformed (choices, delta or content of the wrong type)."""
        choices = payload.get("choices") if isinstance(payload, dict) else None
        if not choices:
            return True
        if not isinstance(choices, list):
            return None
        if len(choices) != 1 or not isinstance(choices[0], dict):
            self.continuable = False
            return True
        delta = choices[0].get("delta") or {}
        content = delta.get("content") if isinstance(delta, dict) else None
        if not isinstance(delta, dict) or not isinstance(content, str | None):
            return None
        if delta.get("tool_calls") or delta.get("function_call"):
            self.continuable = False
        if content:
            self.parts.append(content)
            return True
        return bool(choices[0].get("finish_reason")) or bool(delta.get("tool_calls"))


class SseRelay:
    """Cuts an upstream byte stream at event boundaries and passes whole, well-formed events on."""

    __slots__ = ("_pending", "carried", "continuing", "done", "dropped", "finished", "strip_usage", "stripped",
                 "transcript", "usage")

    def __init__(self, strip_usage: bool, transcript: Transcript | None = None, continuing: bool = False) -> None:
        self.strip_usage = strip_usage
        self.transcript = transcript
        self.continuing = continuing  # a continuation: no second opening delta, and [DONE] is sent by us
        self.usage: dict[str, Any] | None = None
        self.stripped: dict[str, Any] | None = None  # the usage event taken out, for what else it held
        self.finished = False
        self.done = False
        self.dropped = 0
        self.carried = False  # whether the last feed passed on an event with data (not only comments)
        self._pending = b""

    def feed(self, chunk: bytes) -> bytes:
        """The complete events chunk finishes, ready to send; the rest waits for more bytes."""
        data = self._pending + chunk if self._pending else chunk
        end = complete_end(data)
        if end < 0:
            self._pending = data
            self.carried = False
            return b""
        complete, self._pending = data[:end], data[end:]
        if self.transcript is not None or not _well_formed(complete):
            complete = self._sift(complete)
        self.carried = carries_data(complete)
        if not self.finished and FINISH.search(complete):
            self.finished = True
        if DONE in complete or (b'"response.' in complete and RESPONSE_END.search(complete)):
            self.done = True
            if self.continuing:
                complete = complete.replace(DONE_EVENT, b"")
        if USAGE.search(complete):
            complete = self._take_usage(complete)
        return complete

    @property
    def leftover(self) -> bytes:
        """Bytes of an event the stream never finished."""
        return self._pending

    def _sift(self, complete: bytes) -> bytes:
        """Drop malformed events; when keeping a transcript, read each event's content."""
        kept = []
        for event in complete.split(b"\n\n")[:-1]:
            if not _event_ok(event):
                self.dropped += 1
                continue
            if self.transcript is not None and event.startswith(b"data: {"):
                fresh = self.transcript.note(payload_of(event))
                if fresh is None:
                    self.dropped += 1
                    continue
                if not fresh and self.continuing:
                    continue
            kept.append(event + b"\n\n")
        return b"".join(kept)

    def _take_usage(self, complete: bytes) -> bytes:
        kept = []
        for event in complete.split(b"\n\n"):
            if USAGE.search(event):
                payload = payload_of(event)
                usage = _usage_of(payload)
                if usage is not None:
                    self.usage = usage
                    if self.strip_usage and payload.get("choices") == []:
                        self.stripped = payload
                        continue
            kept.append(event)
        return b"\n\n".join(kept)


def carries_data(events: bytes) -> bool:
    """Whether whole events hold a data field: a comment (`: keepalive`) or a bare event/id/retry line does not."""
    return events.startswith(b"data:") or b"\ndata:" in events


def _usage_of(payload: Any) -> dict[str, Any] | None:
    """A chat chunk's usage, or the Responses API's (inside the completed response)."""
    if not isinstance(payload, dict):
        return None
    usage = payload.get("usage")
    if not isinstance(usage, dict) and isinstance(payload.get("response"), dict):
        usage = payload["response"].get("usage")
    return usage if isinstance(usage, dict) else None


def _well_formed(complete: bytes) -> bool:
    """The common case, checked without splitting: one data event holding a JSON object or [DONE]."""
    return complete.count(b"\n\n") == 1 and complete.count(b"\n") == 2 and _event_ok(complete[:-2])


def _event_ok(event: bytes) -> bool:
    """A well-formed event: known fields only, each data line a JSON object or [DONE]."""
    if not event:
        return False
    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            value = line[5:].strip()
            if value != b"[DONE]" and not _json_object(value):
                return False
        elif not line.startswith(FIELDS):
            return False
    return True


def _json_object(value: bytes) -> bool:
    """Whether value is a JSON object: every upstream's events start '{"', so only others are parsed to check."""
    if not value.endswith(b"}"):
        return False
    if value.startswith(b'{"'):
        return True
    try:
        orjson.loads(value)
    except orjson.JSONDecodeError:
        return False
    return True


def payload_of(event: bytes) -> Any:
    """The JSON of an event's data lines, or None when they hold none."""
    data = b"".join(line[5:].lstrip() for line in event.split(b"\n") if line.startswith(b"data:"))
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return None


def usage_event(template: dict[str, Any], usage: dict[str, int]) -> bytes:
    """A final usage event in OpenAI's shape."""
    return b"data: " + orjson.dumps({**template, "choices": [], "usage": usage}) + b"\n\n"


def error_event(message: str, code: str) -> bytes:
    """One in-band error event in OpenAI's error shape, for a stream that cannot be finished."""
    error = {"message": message, "type": "server_error", "code": code, "param": None}
    return b"data: " + orjson.dumps({"error": error}) + b"\n\n"
