"""A chat completions stream as a Messages API stream, translated event by event as it arrives.

    message_start, ping                          at the first chunk
    content_block_start / _delta / _stop         per block: thinking (the upstream's reasoning), text, tool_use
                                                 (its arguments as input_json_delta)
    message_delta (stop_reason, usage), message_stop    once the upstream finished and said [DONE]

A Messages block is contiguous, but a chat stream's tool calls need not be: each piece names its call by
`index`, and a piece of call 0 may come after call 1 began (several calls' pieces can share one chunk). So the
first call streams live, and once it has begun everything else waits for the end, where nothing more can come:
the other calls go out whole in index order (a delta per piece, as they came), then any text or thinking that
came after the first call. Text and thinking before any tool call stream live.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.inbound.messages.answer import REASONING_KEYS, message_id, stop_of, usage_of, with_tools
from gateway.sse import payload_of

DONE = b"data: [DONE]"


def event(kind: str, data: dict[str, Any]) -> bytes:
    """One Messages API event."""
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **data}) + b"\n\n"


class ChatError(Exception):
    """The upstream put an error event in its stream; its message, as it gave it."""


@dataclass
class HeldCall:
    """A tool call waiting for the live one to end: its block, from its first piece, and its arguments' pieces."""

    block: dict[str, Any]
    arguments: list[str] = field(default_factory=list)


def number_of(piece: dict[str, Any]) -> int:
    """The index of the tool call a piece belongs to (one that is not an integer: 0, as a missing one is)."""
    index = piece.get("index")
    return index if isinstance(index, int) and not isinstance(index, bool) else 0


def tool_block(piece: dict[str, Any], number: int) -> dict[str, Any]:
    """The tool_use block a call's first piece opens: its id and name (later pieces' are not read)."""
    function = piece.get("function")
    name = function.get("name") if isinstance(function, dict) else None
    return {"type": "tool_use", "id": str(piece.get("id") or f"toolu_{number}"), "name": str(name or ""),
            "input": {}}


def arguments_of(piece: dict[str, Any]) -> str:
    """The piece of its call's arguments a piece carries ("" for none)."""
    function = piece.get("function")
    arguments = function.get("arguments") if isinstance(function, dict) else None
    return arguments if isinstance(arguments, str) else ""


class EventTranslator:
    """Turns the events of one chat completions stream into Messages API events, keeping what spans them."""

    __slots__ = ("_block", "_held", "_index", "_later", "_live", "done", "finished", "started", "stop_reason",
                 "stop_sequence", "usage")

    def __init__(self) -> None:
        self.started = False
        self.finished = False  # a finish_reason arrived
        self.done = False  # [DONE] arrived
        self.stop_reason: str | None = None
        self.stop_sequence: str | None = None
        self.usage: dict[str, int] | None = None
        self._index = -1  # the open block's index
        self._block: str | None = None  # the open block's kind: "thinking", "text", or "tool:N" for tool call N
        self._live: int | None = None  # the tool call streaming live: the first one; its block stays open
        self._held: dict[int, HeldCall] = {}  # the other tool calls, by index
        self._later: list[tuple[str, str]] = []  # thinking and text that came after the first tool call

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
        for number in sorted(self._held):
            self._held_call(self._held[number], out)
        for kind, piece in self._later:
            self._stream(kind, piece, out)
        self._close(out)
        usage = self.usage or {"input_tokens": 0, "output_tokens": 0}
        stop_reason = with_tools(self.stop_reason or "end_turn", self._live is not None)
        out.append(event("message_delta", {"delta": {"stop_reason": stop_reason,
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
        if choice.get("finish_reason"):  # blocks stay open: a held call's pieces may still come before [DONE]
            self.finished = True
            self.stop_reason, self.stop_sequence = stop_of(choice)

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
            self._text("thinking", reasoning, out)
        content = delta.get("content")
        if isinstance(content, str) and content:
            self._text("text", content, out)
        found = delta.get("tool_calls")
        pieces = [p for p in found if isinstance(p, dict)] if isinstance(found, list) else []
        for piece in sorted(pieces, key=number_of) if len(pieces) > 1 else pieces:
            self._tool_call(piece, out)

    def _text(self, kind: str, piece: str, out: list[bytes]) -> None:
        """Thinking or text: live, unless a tool call's block is open (then at the end, after the tool calls)."""
        if self._live is None:
            self._stream(kind, piece, out)
        else:
            self._later.append((kind, piece))

    def _stream(self, kind: str, piece: str, out: list[bytes]) -> None:
        if kind == "thinking":
            self._open("thinking", {"type": "thinking", "thinking": "", "signature": ""}, out)
            out.append(self._delta_event({"type": "thinking_delta", "thinking": piece}))
        else:
            self._open("text", {"type": "text", "text": ""}, out)
            out.append(self._delta_event({"type": "text_delta", "text": piece}))

    def _tool_call(self, piece: dict[str, Any], out: list[bytes]) -> None:
        """A piece of the live call goes out; the first call's first piece opens its block; the rest are held."""
        number, arguments = number_of(piece), arguments_of(piece)
        if self._live is None:
            self._live = number
            self._open(f"tool:{number}", tool_block(piece, number), out)
        elif number != self._live:
            held = self._held.get(number)
            if held is None:
                held = self._held[number] = HeldCall(tool_block(piece, number))
            if arguments:
                held.arguments.append(arguments)
            return
        if arguments:
            out.append(self._delta_event({"type": "input_json_delta", "partial_json": arguments}))

    def _held_call(self, held: HeldCall, out: list[bytes]) -> None:
        """A held tool call as one whole block: its start, a delta for each piece of its arguments, its stop."""
        self._index += 1
        out.append(event("content_block_start", {"index": self._index, "content_block": held.block}))
        for arguments in held.arguments:
            out.append(self._delta_event({"type": "input_json_delta", "partial_json": arguments}))
        out.append(event("content_block_stop", {"index": self._index}))

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
