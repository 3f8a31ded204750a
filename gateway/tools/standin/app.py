"""The OpenAI-compatible stand-in: an ASGI app that answers, and remembers what it saw.

It is not a model: it echoes the prompt, labelled with who answered, so routing can be seen.
Faults are chosen by setting `faults` (the next requests' behaviour), by a request's `x-standin-*` headers, or
over HTTP by POSTing a fault to /standin/faults (how `switchyard demo` shows a fallback).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import orjson

from gateway.asgi import Receive, Scope, Send, header_map, send_bytes
from gateway.sse import DONE_EVENT, usage_event
from gateway.tools.standin.events import event, named_event

JSON = b"application/json"
SSE = b"text/event-stream"
FAULTS_PATH = "/standin/faults"
MAX_QUEUED = 1000  # faults one POST to /standin/faults may queue


@dataclass
class Fault:
    """How to misbehave on one request: an error status (with a message and Retry-After), a delay, or a stream
    cut after some text deltas."""

    status: int | None = None
    delay_s: float = 0.0
    cut_after: int | None = None
    retry_after: str | None = None
    message: str | None = None


@dataclass
class Seen:
    """One request as a stand-in received it."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    query: str = ""
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)


class StandIn:
    """An ASGI app speaking enough of the OpenAI API to route to."""

    def __init__(self, label: str, chunks: int = 8) -> None:
        self.label = label
        self.chunks = chunks
        self.faults: deque[Fault] = deque()
        self.seen: list[Seen] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        headers = header_map(scope)
        raw = await read_all(receive)
        if scope["method"] == "GET" and scope["path"].endswith("/models"):
            data = [{"id": "standin", "object": "model", "created": 0, "owned_by": self.label}]
            await send_bytes(send, 200, orjson.dumps({"object": "list", "data": data}), JSON)
            return
        if scope["path"] == FAULTS_PATH:
            await self._queue_faults(scope["method"], raw, send)
            return
        seen = Seen(scope["path"], headers, orjson.loads(raw or b"{}"))
        self.seen.append(seen)
        watcher = asyncio.get_running_loop().create_task(watch(receive, seen.disconnected))
        try:
            await self._answer(seen, self._fault(headers), send)
        finally:
            watcher.cancel()

    def _fault(self, headers: dict[str, str]) -> Fault:
        if self.faults:
            return self.faults.popleft()
        return Fault(status=int(headers["x-standin-status"]) if "x-standin-status" in headers else None,
                     delay_s=float(headers.get("x-standin-delay-s", 0)),
                     cut_after=int(headers["x-standin-cut-after"]) if "x-standin-cut-after" in headers else None)

    async def _queue_faults(self, method: str, raw: bytes, send: Send) -> None:
        """POST a fault's fields (and `count`, how many requests it is for) to queue it; GET the queue."""
        if method == "POST":
            try:
                count, fault = parse_fault(raw)
            except ValueError as exc:
                error = {"error": {"message": str(exc), "type": "invalid_request_error", "code": None, "param": None}}
                await send_bytes(send, 400, orjson.dumps(error), JSON)
                return
            self.faults.extend([fault] * count)
        queued = [asdict(fault) for fault in self.faults]
        await send_bytes(send, 200, orjson.dumps({"object": "list", "data": queued}), JSON)

    async def _answer(self, seen: Seen, fault: Fault, send: Send) -> None:
        if fault.delay_s:
            await asyncio.sleep(fault.delay_s)
        if fault.status is not None:
            extra = [(b"retry-after", fault.retry_after.encode())] if fault.retry_after else []
            error = {"error": {"message": fault.message or f"{self.label}: error {fault.status}",
                               "type": "standin_error", "code": fault.status, "param": None}}
            await send_bytes(send, fault.status, orjson.dumps(error), JSON, extra)
            return
        body, path = seen.body, seen.path
        if path.endswith("/embeddings"):
            inputs = body.get("input")
            count = len(inputs) if isinstance(inputs, list) else 1
            data = [{"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]} for i in range(count)]
            usage = {"prompt_tokens": 3 * count, "total_tokens": 3 * count}
            await send_bytes(send, 200, orjson.dumps({"object": "list", "model": body.get("model"), "data": data,
                                                      "usage": usage}), JSON)
        elif path.endswith("/responses"):
            await self._responses(body, fault, send)
        elif body.get("stream"):
            await self._stream(body, fault, send)
        else:
            await send_bytes(send, 200, orjson.dumps(self._completion(body, path)), JSON)

    def _words(self, body: dict[str, Any]) -> list[str]:
        """The answer: its own label and counted words; when asked to continue, only what follows the prefix."""
        words = [w + " " for w in (f"[{self.label}] " + " ".join(f"word{i}" for i in range(self.chunks))).split(" ")]
        messages = body.get("messages") or []
        if body.get("continue_final_message") and messages and messages[-1].get("role") == "assistant":
            prefix, full = messages[-1].get("content") or "", "".join(words)
            rest = full[len(prefix):] if full.startswith(prefix) else f"(continued by {self.label}) "
            return [w + " " for w in rest.split(" ") if w] if rest.strip() else []
        return words

    def _completion(self, body: dict[str, Any], path: str) -> dict[str, Any]:
        words = self._words(body)
        usage = {"prompt_tokens": 10, "completion_tokens": len(words), "total_tokens": 10 + len(words)}
        base = {"id": f"cmpl-{time.monotonic_ns()}", "created": int(time.time()), "model": body.get("model"),
                "usage": usage}
        if path.endswith("/completions") and not path.endswith("/chat/completions"):
            return {**base, "object": "text_completion",
                    "choices": [{"index": 0, "text": "".join(words), "finish_reason": "stop", "logprobs": None}]}
        message: dict[str, Any] = {"role": "assistant", "content": "".join(words)}
        finish = "stop"
        if body.get("tools") and body.get("tool_choice") != "none":
            name = body["tools"][0]["function"]["name"]
            message = {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": name, "arguments": "{\"city\": \"Paris\"}"}}]}
            finish = "tool_calls"
        return {**base, "object": "chat.completion",
                "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}]}

    async def _stream(self, body: dict[str, Any], fault: Fault, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", SSE)]})
        base = {"id": f"chatcmpl-{time.monotonic_ns()}", "object": "chat.completion.chunk",
                "created": int(time.time()), "model": body.get("model")}
        words = self._words(body)

        async def emit(data: bytes) -> None:
            await send({"type": "http.response.body", "body": data, "more_body": True})

        await emit(event({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                               "finish_reason": None}]}))
        for i, word in enumerate(words):
            if i == fault.cut_after:
                raise ConnectionResetError("stand-in: cut mid-stream")
            await emit(event({**base, "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]}))
        await emit(event({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
        if (body.get("stream_options") or {}).get("include_usage"):
            await emit(usage_event(base, {"prompt_tokens": 10, "completion_tokens": len(words),
                                          "total_tokens": 10 + len(words)}))
        await send({"type": "http.response.body", "body": DONE_EVENT, "more_body": False})

    async def _responses(self, body: dict[str, Any], fault: Fault, send: Send) -> None:
        """The Responses API: one response object, or its events when streamed."""
        words = self._words(body)
        usage = {"input_tokens": 10, "output_tokens": len(words), "total_tokens": 10 + len(words)}
        text = {"type": "output_text", "text": "".join(words), "annotations": []}
        response = {"id": f"resp_{time.monotonic_ns()}", "object": "response", "created_at": int(time.time()),
                    "status": "completed", "model": body.get("model"), "parallel_tool_calls": True,
                    "tool_choice": "auto", "tools": [], "usage": usage,
                    "output": [{"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
                                "content": [text]}]}
        if not body.get("stream"):
            await send_bytes(send, 200, orjson.dumps(response), JSON)
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", SSE)]})

        async def emit(kind: str, data: dict[str, Any]) -> None:
            await send({"type": "http.response.body", "body": named_event(kind, data), "more_body": True})

        await emit("response.created", {"response": {**response, "status": "in_progress", "output": []}})
        for i, word in enumerate(words):
            if i == fault.cut_after:
                raise ConnectionResetError("stand-in: cut mid-stream")
            await emit("response.output_text.delta", {"item_id": "msg_1", "output_index": 0, "content_index": 0,
                                                      "delta": word})
        await emit("response.completed", {"response": response})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def parse_fault(raw: bytes) -> tuple[int, Fault]:
    """A POSTed fault and how many requests it is for; ValueError saying what is wrong with it."""
    try:
        doc = orjson.loads(raw or b"{}")
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"the body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ValueError("the body must be a JSON object")
    count = doc.pop("count", 1)
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_QUEUED:
        raise ValueError(f"count must be a whole number from 1 to {MAX_QUEUED}")
    known = [f.name for f in fields(Fault)]
    unknown = sorted(set(doc) - set(known))
    if unknown:
        raise ValueError(f"unknown fault fields {unknown}; a fault has {known}")
    for name, value in doc.items():
        if not _valid(name, value):
            raise ValueError(f"{name} has a bad value: {value!r}")
    return count, Fault(**doc)


def _valid(name: str, value: object) -> bool:
    """Whether value suits the Fault field name."""
    if value is None:
        return name != "delay_s"
    if isinstance(value, bool):
        return False
    if name == "status":
        return isinstance(value, int) and 100 <= value <= 599
    if name == "delay_s":
        return isinstance(value, int | float) and 0 <= value <= 600
    if name == "cut_after":
        return isinstance(value, int) and value >= 0
    return isinstance(value, str)


async def read_all(receive: Receive) -> bytes:
    """The whole request body."""
    parts = []
    while True:
        message = await receive()
        parts.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(parts)


async def lifespan(receive: Receive, send: Send) -> None:
    """Answer the ASGI lifespan protocol: nothing to start or stop."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def watch(receive: Receive, disconnected: asyncio.Event) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    disconnected.set()
