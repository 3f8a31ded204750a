"""A chat completions stream as a Messages API stream, translated event by event as it arrives.

    message_start, ping                          at the first chunk
    content_block_start / _delta / _stop         per block: thinking (the upstream's reasoning), text, tool_use
                                                 (its arguments as input_json_delta)
    message_delta (stop_reason, usage), message_stop    once the upstream finished and said [DONE]
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.inbound.messages.answer import REASONING_KEYS, message_id, stop_of, usage_of
from gateway.sse import payload_of

DONE = b"data: [DONE]"


def event(kind: str, data: dict[str, Any]) -> bytes:
    """One Messages API event."""
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **data}) + b"\n\n"


class ChatError(Exception):
    """The upstream put an error event in its stream; its message, as it gave it."""


class EventTranslator:
    """Turns the events of one chat completions stream into Messages API events, keeping what spans them."""

    __slots__ = ("_block", "_index", "_tools", "done", "finished", "started", "stop_reason", "stop_sequence",
                 "usage")

    def __init__(self) -> None:
        self.started = False
        self.finished = False  # a finish_reason arrived
        self.done = False  # [DONE] arrived
        self.stop_reason: str | None = None
        self.stop_sequence: str | None = None
        self.usage: dict[str, int] | None = None
        self._index = -1  # the open block's index
        self._block: str | None = None  # the open block's kind: "thinking", "text", or "tool:N" for tool call N
        self._tools: set[int] = set()

    def feed(self, events: bytes) -> bytes:
        """The Messages events for complete chat events; ChatError for an error event."""
        out: list[bytes] = []
        for raw in events.split(b"\n\n"):
            if raw.startswith(DONE):
                self.done = True
            elif raw.startswith(b"data:"):
                payload = payload_of(raw)
                if isinstance(payload, dict):
                    self._chunk(payload, out)
        return b"".join(out)

    def end(self) -> bytes:
        """The events that close the message: its last block, its stop reason and usage, message_stop."""
        out: list[bytes] = []
        self._close(out)
        usage = self.usage or {"input_tokens": 0, "output_tokens": 0}
        out.append(event("message_delta", {"delta": {"stop_reason": self.stop_reason or "end_turn",
                                                     "stop_sequence": self.stop_sequence}, "usage": usage}))
        out.append(event("message_stop", {}))
        return b"".join(out)

    def _chunk(self, payload: dict[str, Any], out: list[bytes]) -> None:
        error = payload.get("error")
        if error is not None:
            message = error.get("message") if isinstance(error, dict) else error
            raise ChatError(str(message)[:500])
        if not self.started:
            self._start(payload, out)
        if isinstance(payload.get("usage"), dict):
            self.usage = usage_of(payload["usage"])
        choices = payload.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return
        choice = choices[0]
        delta = choice.get("delta")
        if isinstance(delta, dict):
            self._delta(delta, out)
        if choice.get("finish_reason"):
            self.finished = True
            self.stop_reason, self.stop_sequence = stop_of(choice)
            self._close(out)

    def _start(self, payload: dict[str, Any], out: list[bytes]) -> None:
        self.started = True
        message: dict[str, Any] = {
            "id": message_id(payload.get("id")), "type": "message", "role": "assistant", "content": [],
            "model": str(payload.get("model") or ""), "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0}}
        out.append(event("message_start", {"message": message}))
        out.append(event("ping", {}))

    def _delta(self, delta: dict[str, Any], out: list[bytes]) -> None:
        reasoning = next((delta[k] for k in REASONING_KEYS if isinstance(delta.get(k), str) and delta[k]), None)
        if reasoning is not None:
            self._open("thinking", {"type": "thinking", "thinking": "", "signature": ""}, out)
            out.append(self._delta_event({"type": "thinking_delta", "thinking": reasoning}))
        content = delta.get("content")
        if isinstance(content, str) and content:
            self._open("text", {"type": "text", "text": ""}, out)
            out.append(self._delta_event({"type": "text_delta", "text": content}))
        for call in delta.get("tool_calls") or ():
            if isinstance(call, dict):
                self._tool_call(call, out)

    def _tool_call(self, call: dict[str, Any], out: list[bytes]) -> None:
        number = call.get("index", 0)
        found = call.get("function")
        function: dict[str, Any] = found if isinstance(found, dict) else {}
        if number not in self._tools:
            self._tools.add(number)
            self._close(out)
            block = {"type": "tool_use", "id": str(call.get("id") or f"toolu_{number}"),
                     "name": str(function.get("name") or ""), "input": {}}
            self._open(f"tool:{number}", block, out)
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments and self._block == f"tool:{number}":
            out.append(self._delta_event({"type": "input_json_delta", "partial_json": arguments}))

    def _open(self, kind: str, block: dict[str, Any], out: list[bytes]) -> None:
        if self._block == kind:
            return
        self._close(out)
        self._index += 1
        self._block = kind
        out.append(event("content_block_start", {"index": self._index, "content_block": block}))

    def _close(self, out: list[bytes]) -> None:
        if self._block is not None:
            out.append(event("content_block_stop", {"index": self._index}))
            self._block = None

    def _delta_event(self, delta: dict[str, Any]) -> bytes:
        return event("content_block_delta", {"index": self._index, "delta": delta})
