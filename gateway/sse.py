"""Relay server-sent events as they arrive, noting usage, finish and [DONE] without parsing every event."""

from __future__ import annotations

import re
from typing import Any

import orjson

USAGE = re.compile(rb'"usage"\s*:\s*\{')
FINISH = re.compile(rb'"finish_reason"\s*:\s*"')
DONE = b"data: [DONE]"
DONE_EVENT = b"data: [DONE]\n\n"


class SseRelay:
    """Cuts an upstream byte stream at event boundaries and passes whole events on."""

    __slots__ = ("_pending", "done", "events", "finished", "strip_usage", "usage")

    def __init__(self, strip_usage: bool) -> None:
        self.strip_usage = strip_usage
        self.usage: dict[str, Any] | None = None
        self.finished = False
        self.done = False
        self.events = 0
        self._pending = b""

    def feed(self, chunk: bytes) -> bytes:
        """The complete events chunk finishes, ready to send; the rest waits for more bytes."""
        data = self._pending + chunk if self._pending else chunk
        end = data.rfind(b"\n\n")
        if end < 0:
            self._pending = data
            return b""
        end += 2
        complete, self._pending = data[:end], data[end:]
        self.events += complete.count(b"\n\n")
        if not self.finished and FINISH.search(complete):
            self.finished = True
        if DONE in complete:
            self.done = True
        if USAGE.search(complete):
            complete = self._take_usage(complete)
        return complete

    @property
    def leftover(self) -> bytes:
        """Bytes of an event the stream never finished."""
        return self._pending

    def _take_usage(self, complete: bytes) -> bytes:
        kept = []
        for event in complete.split(b"\n\n"):
            if USAGE.search(event):
                payload = _payload(event)
                if isinstance(payload, dict) and isinstance(payload.get("usage"), dict):
                    self.usage = payload["usage"]
                    if self.strip_usage and payload.get("choices") == []:
                        continue
            kept.append(event)
        return b"\n\n".join(kept)


def _payload(event: bytes) -> Any:
    data = b"".join(line[5:].lstrip() for line in event.split(b"\n") if line.startswith(b"data:"))
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return None


def error_event(message: str, code: str) -> bytes:
    """One in-band error event in OpenAI's error shape, for a stream that cannot be finished."""
    error = {"message": message, "type": "server_error", "code": code, "param": None}
    return b"data: " + orjson.dumps({"error": error}) + b"\n\n"
