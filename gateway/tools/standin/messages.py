"""A stand-in Anthropic upstream for the tests: /v1/messages answered as Anthropic does, JSON or events.

Like gateway/tools/standin.py it is not a model: it answers its own label and counted words, or calls the first
tool it is offered (until the conversation holds a tool result), and remembers every request it saw. Faults
are set in `faults`: an error status, a delay, a stream cut after N deltas, or an `error` event after N deltas.
/v1/messages/count_tokens answers a count of its own (`count_of`), never the gateway's estimate.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.asgi import Receive, Scope, Send, header_map, send_bytes
from gateway.tools.standin.app import Seen, lifespan, watch

JSON = b"application/json"
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
               429: "rate_limit_error", 500: "api_error", 529: "overloaded_error"}
INPUT_TOKENS = 10
COUNT_BASE = 1000  # what every count starts from, so that no count is the gateway's estimate of the same request
COUNT_PATH = "/v1/messages/count_tokens"
TOOL_INPUT = ('{"city": ', '"Paris"}')


@dataclass
class MessagesFault:
    """How to misbehave on one request."""

    status: int | None = None
    delay_s: float = 0.0
    cut_after: int | None = None  # deltas sent before the connection is reset
    error_after: int | None = None  # deltas sent before an `error` event ends the stream
    retry_after: str | None = None
    pause_s: float = 0.0  # a pause before the cut or the error event, so the events before it arrive first
    body: bytes | None = None  # a whole 200 answer of these bytes, whatever was asked


def count_of(body: dict[str, Any]) -> dict[str, Any]:
    """The stand-in's count_tokens answer: COUNT_BASE plus a token per three bytes of the request but its model."""
    tokens = COUNT_BASE + len(orjson.dumps({k: v for k, v in body.items() if k != "model"})) // 3
    answer: dict[str, Any] = {"input_tokens": tokens}
    if "context_management" in body:  # as Anthropic answers it: the count before context management
        answer["context_management"] = {"original_input_tokens": tokens}
    return answer


class MessagesStandIn:
    """An ASGI app speaking enough of Anthropic's Messages API to route to."""

    def __init__(self, label: str, chunks: int = 8, key: str | None = None) -> None:
        self.label = label
        self.chunks = chunks
        self.key = key  # when set, requests must carry it in x-api-key
        self.faults: deque[MessagesFault] = deque()
        self.seen: list[Seen] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        headers = header_map(scope)
        raw = b""
        while True:
            message = await receive()
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        seen = Seen(scope["path"], headers, orjson.loads(raw or b"{}"))
        self.seen.append(seen)
        if self.key is not None and headers.get("x-api-key") != self.key:
            await self._error(send, 401, MessagesFault())
            return
        if scope["path"] not in ("/v1/messages", COUNT_PATH):
            await self._error(send, 404, MessagesFault())
            return
        watcher = asyncio.get_running_loop().create_task(watch(receive, seen.disconnected))
        try:
            await self._answer(seen.path, seen.body, self.faults.popleft() if self.faults else MessagesFault(), send)
        finally:
            watcher.cancel()

    async def _error(self, send: Send, status: int, fault: MessagesFault) -> None:
        error = {"type": "error", "error": {"type": ERROR_TYPES.get(status, "api_error"),
                                            "message": f"{self.label}: error {status}"}}
        extra = [(b"retry-after", fault.retry_after.encode())] if fault.retry_after else []
        await send_bytes(send, status, orjson.dumps(error), JSON, extra)

    async def _answer(self, path: str, body: dict[str, Any], fault: MessagesFault, send: Send) -> None:
        if fault.delay_s:
            await asyncio.sleep(fault.delay_s)
        if fault.status is not None:
            await self._error(send, fault.status, fault)
        elif fault.body is not None:
            await send_bytes(send, 200, fault.body, JSON)
        elif path == COUNT_PATH:
            await send_bytes(send, 200, orjson.dumps(count_of(body)), JSON)
        elif body.get("stream"):
            await self._stream(body, fault, send)
        else:
            await send_bytes(send, 200, orjson.dumps(self.message(body)), JSON)

    def words(self) -> list[str]:
        """The answer's text, piece by piece."""
        return [w + " " for w in (f"[{self.label}] " + " ".join(f"word{i}" for i in range(self.chunks))).split(" ")]

    def calls_tool(self, body: dict[str, Any]) -> str | None:
        """The tool this request is answered with a call of, if any."""
        tools, choice = body.get("tools"), body.get("tool_choice") or {}
        if not tools or choice.get("type") == "none":
            return None
        last = (body.get("messages") or [{}])[-1].get("content")
        if isinstance(last, list) and any(isinstance(b, dict) and b.get("type") == "tool_result" for b in last):
            return None
        return str(tools[0]["name"])

    def usage(self, body: dict[str, Any], output: int) -> dict[str, Any]:
        """Usage as Anthropic reports it; a request that marks cache_control reads some of its prompt from cache and
        writes some to it, for an hour when a mark asks for `ttl: 1h`."""
        text = orjson.dumps(body)
        written = 2 if b"cache_control" in text else 0
        hour = written if b'"ttl":"1h"' in text else 0
        return {"input_tokens": INPUT_TOKENS, "output_tokens": output, "cache_creation_input_tokens": written,
                "cache_read_input_tokens": 4 if written else 0,
                "cache_creation": {"ephemeral_5m_input_tokens": written - hour, "ephemeral_1h_input_tokens": hour}}

    def message(self, body: dict[str, Any]) -> dict[str, Any]:
        """The whole answer to a request."""
        tool = self.calls_tool(body)
        if tool is not None:
            content: list[dict[str, Any]] = [{"type": "tool_use", "id": "toolu_standin_1", "name": tool,
                                              "input": orjson.loads("".join(TOOL_INPUT))}]
            stop, output = "tool_use", 5
        else:
            content, stop = [{"type": "text", "text": "".join(self.words())}], "end_turn"
            output = len(self.words())
        return {"id": f"msg_{time.monotonic_ns()}", "type": "message", "role": "assistant", "model": body.get("model"),
                "content": content, "stop_reason": stop, "stop_sequence": None, "usage": self.usage(body, output)}

    async def _stream(self, body: dict[str, Any], fault: MessagesFault, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream; charset=utf-8")]})

        async def event(kind: str, data: dict[str, Any]) -> None:
            line = b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **data}) + b"\n\n"
            await send({"type": "http.response.body", "body": line, "more_body": True})

        whole = self.message(body)
        await event("message_start", {"message": {**whole, "content": [], "stop_reason": None,
                                                  "usage": {**whole["usage"], "output_tokens": 1}}})
        block = whole["content"][0]
        tool = block["type"] == "tool_use"
        await event("content_block_start", {"index": 0, "content_block": {**block, "input": {}} if tool
                                            else {"type": "text", "text": ""}})
        await event("ping", {})
        pieces = TOOL_INPUT if tool else self.words()
        for i, piece in enumerate(pieces):
            if fault.pause_s and i in (fault.cut_after, fault.error_after):
                await asyncio.sleep(fault.pause_s)
            if i == fault.cut_after:
                raise ConnectionResetError("messages stand-in: cut mid-stream")
            if i == fault.error_after:
                await event("error", {"error": {"type": "overloaded_error", "message": "Overloaded"}})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            delta = {"type": "input_json_delta", "partial_json": piece} if tool else {"type": "text_delta",
                                                                                      "text": piece}
            await event("content_block_delta", {"index": 0, "delta": delta})
        await event("content_block_stop", {"index": 0})
        await event("message_delta", {"delta": {"stop_reason": whole["stop_reason"], "stop_sequence": None},
                                      "usage": {"output_tokens": whole["usage"]["output_tokens"]}})
        await event("message_stop", {})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
