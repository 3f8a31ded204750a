"""Relay an upstream's events as they arrive: whole events only, malformed ones dropped, usage and finish noted."""

from __future__ import annotations

import re
from typing import Any

import orjson

from gateway.sse import (
    FIELDS,
    FINISH,
    RESPONSE_END,
    USAGE,
    carries_data,
    complete_end,
    data_of,
    has_done,
    joined,
    payload_of,
    split,
)

# Events of one data line each, "data:" and a JSON object that starts with a key, or [DONE]; a space after the colon.
WELL_FORMED = re.compile(rb'(?:data: ?(?:\{"[^\n]*\}|\[DONE\])\n\n)*+')


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
        if not isinstance(delta, dict) or (content is not None and content.__class__ is not str):
            return None
        if delta.get("tool_calls") or delta.get("function_call"):
            self.continuable = False
        if content:
            self.parts.append(content)
            return True
        return bool(choices[0].get("finish_reason")) or bool(delta.get("tool_calls"))


class SseRelay:
    """Cuts an upstream's LF-ended byte stream at event boundaries and passes whole, well-formed events on as
    they came, byte for byte."""

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
        if self.transcript is not None or self.continuing or not _well_formed(complete):
            complete = self._sift(complete)
        self.carried = carries_data(complete)
        if not self.finished and FINISH.search(complete):
            self.finished = True
        if has_done(complete) or (
                b'"response.' in complete and RESPONSE_END.search(complete)):
            self.done = True
        named = complete.find(b'"usage"')
        found = USAGE.search(complete, named) if named >= 0 else None
        if found is not None:
            complete = self._take_usage(complete, found)
        return complete

    @property
    def leftover(self) -> bytes:
        """Bytes of an event the stream never finished."""
        return self._pending

    def _sift(self, complete: bytes) -> bytes:
        """Drop malformed events (blank lines between events are no event); when keeping a transcript, read each
        event's content; a continuation's [DONE] is left to the stream to send."""
        kept: list[bytes] = []
        for event in split(complete):
            if not _event_ok(event):
                self.dropped += 1
                continue
            if self.continuing and has_done(event):
                self.done = True
                continue
            if self.transcript is not None and b"{" in event:
                fresh = self.transcript.note(payload_of(event))
                if fresh is None:
                    self.dropped += 1
                    continue
                if not fresh and self.continuing:
                    continue
            kept.append(event)
        return joined(kept)

    def _take_usage(self, complete: bytes, first: re.Match[bytes]) -> bytes:
        """complete with its usage events read (and taken out when stripped), the other events as they came; first
        is the first usage found."""
        kept, start = [], 0
        found: re.Match[bytes] | None = first
        while found is not None:
            begin = complete.rfind(b"\n\n", start, found.start())
            begin = start if begin < 0 else begin + 2
            end = complete.find(b"\n\n", found.end())
            end = len(complete) if end < 0 else end + 2
            if self._took(complete[begin:end]):
                kept.append(complete[start:begin])
                start = end
            found = USAGE.search(complete, end)
        if not kept:
            return complete
        kept.append(complete[start:])
        return b"".join(kept)

    def _took(self, event: bytes) -> bool:
        """Note the usage an event holds; True when the event is to be taken out (a stripped usage-only event)."""
        payload = payload_of(event)
        usage = _usage_of(payload)
        if usage is None:
            return False
        self.usage = usage
        if self.strip_usage and payload.get("choices") == []:
            self.stripped = payload
            return True
        return False


def _usage_of(payload: Any) -> dict[str, Any] | None:
    """A chat chunk's usage, or the Responses API's (inside the completed response)."""
    if not isinstance(payload, dict):
        return None
    usage = payload.get("usage")
    if not isinstance(usage, dict) and isinstance(payload.get("response"), dict):
        usage = payload["response"].get("usage")
    return usage if isinstance(usage, dict) else None


def _well_formed(complete: bytes) -> bool:
    """The common case, checked without parsing: events of one data line each, holding a JSON object or [DONE]."""
    if WELL_FORMED.fullmatch(complete) is not None:  # one C pass over the read, not a few Python steps an event
        return True
    events = complete.count(b"\n\n")
    if complete.count(b"\n") != 2 * events:  # a field line more, or a blank line between events
        return False
    return all(event.startswith(b"data:") and _data_ok(event[5:].lstrip(b" "))
               for event in complete[:-2].split(b"\n\n"))


def _event_ok(event: bytes) -> bool:
    """A well-formed event: known fields only, and data (its lines joined) that is a JSON object or [DONE]."""
    if not all(line.startswith(FIELDS) for line in event.split(b"\n")):
        return False
    data = data_of(event)
    return data is None or _data_ok(data.strip())


def _data_ok(value: bytes) -> bool:
    """Whether value is [DONE] or a JSON object: every upstream's events start '{"', so only others are parsed."""
    if value == b"[DONE]":
        return True
    if not value.endswith(b"}"):
        return False
    if value.startswith(b'{"'):
        return True
    try:
        orjson.loads(value)
    except orjson.JSONDecodeError:
        return False
    return True
