"""Fake Anthropic and Gemini servers: ASGI apps that speak each wire format, answer, and remember what they saw.

Like `gateway.tools.standin.StandIn`, they are not models: the answer names who gave it, so routing can be seen.
Faults queue up in `faults`, one per request; a prompt over `context_limit` characters is refused as too long.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.asgi import Receive, Scope, Send, header_map, send_bytes

JSON = b"application/json"
SSE = b"text/event-stream"
GEMINI_PATH = re.compile(r"^/v1beta/models/(?P<model>[^/:]+):(?P<method>generateContent|streamGenerateContent)$")
Event = Callable[[bytes], Awaitable[None]]


@dataclass
class Fault:
    """How to misbehave on one request: an error status, a delay, or a stream cut after some text deltas."""

    status: int | None = None
    retry_after: str | None = None
    delay_s: float = 0.0
    cut_after: int | None = None
    message: str | None = None


@dataclass
class Seen:
    """One request as the fake received it."""

    path: str
    query: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class Answer:
    """What the fake says: words of text, or one tool call."""

    words: list[str]
    tool: tuple[str, dict[str, Any]] | None = None
    prompt_tokens: int = 10


@dataclass
class Fake:
    """What both fakes share: the fault queue, the record of requests, and the answer."""

    label: str
    words: int = 8
    context_limit: int | None = None
    faults: deque[Fault] = field(default_factory=deque)
    seen: list[Seen] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        raw = b""
        while True:
            message = await receive()
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        seen = Seen(scope["path"], scope.get("query_string", b"").decode(), header_map(scope),
                    orjson.loads(raw or b"{}"))
        self.seen.append(seen)
        fault = self.faults.popleft() if self.faults else Fault()
        if fault.delay_s:
            await asyncio.sleep(fault.delay_s)
        await self.answer(seen, fault, send)

    async def answer(self, seen: Seen, fault: Fault, send: Send) -> None:
        raise NotImplementedError

    def text_words(self, extra: str = "") -> list[str]:
        return [w + " " for w in f"[{self.label}]{extra} {' '.join(f'word{i}' for i in range(self.words))}".split(" ")]

    def too_long(self, body: dict[str, Any]) -> bool:
        return self.context_limit is not None and len(orjson.dumps(body)) > self.context_limit


async def open_sse(send: Send) -> Event:
    """Start an event-stream response; the returned function sends one chunk of it."""
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", SSE), (b"cache-control", b"no-cache")]})

    async def event(data: bytes) -> None:
        await send({"type": "http.response.body", "body": data, "more_body": True})

    return event


class FakeAnthropic(Fake):
    """Anthropic's Messages API: POST /v1/messages, JSON or SSE (message_start ... message_stop)."""

    async def answer(self, seen: Seen, fault: Fault, send: Send) -> None:
        body = seen.body
        if seen.path != "/v1/messages":
            await self._error(send, 404, "not_found_error", f"no route {seen.path}")
        elif "x-api-key" not in seen.headers or "anthropic-version" not in seen.headers:
            await self._error(send, 401, "authentication_error", "x-api-key header is required")
        elif fault.status is not None:
            kind = {429: "rate_limit_error", 529: "overloaded_error", 500: "api_error", 401: "authentication_error",
                    400: "invalid_request_error"}.get(fault.status, "api_error")
            await self._error(send, fault.status, kind, fault.message or f"{self.label}: {kind}", fault.retry_after)
        elif self.too_long(body):
            await self._error(send, 400, "invalid_request_error",
                              f"prompt is too long: {len(orjson.dumps(body))} tokens > {self.context_limit} maximum")
        elif body.get("stream"):
            await self._stream(body, self._answer(body), fault, send)
        else:
            await send_bytes(send, 200, orjson.dumps(self._message(body, self._answer(body))), JSON)

    def _answer(self, body: dict[str, Any]) -> Answer:
        tools = body.get("tools") or []
        choice = body.get("tool_choice") or {}
        images = sum(1 for m in body.get("messages", []) if isinstance(m.get("content"), list)
                     for part in m["content"] if part.get("type") == "image")
        prompt = len(orjson.dumps(body.get("messages"))) // 4
        if tools and choice.get("type") != "none":
            tool = next((t for t in tools if t["name"] == choice.get("name")), tools[0])
            arguments: dict[str, Any] = {"city": "Paris"}
            if tool["name"] == "json_tool_call":
                arguments = {"answer": self.label}
            return Answer([], (tool["name"], arguments), prompt)
        if body.get("output_format") or (body.get("output_config") or {}).get("format"):
            return Answer([orjson.dumps({"answer": self.label}).decode()], None, prompt)
        return Answer(self.text_words(f" saw {images} image(s)" if images else ""), None, prompt)

    def _message(self, body: dict[str, Any], answer: Answer) -> dict[str, Any]:
        content: list[dict[str, Any]]
        if answer.tool is not None:
            content = [{"type": "tool_use", "id": "toolu_01", "name": answer.tool[0], "input": answer.tool[1]}]
        else:
            content = [{"type": "text", "text": "".join(answer.words)}]
        return {"id": f"msg_{time.monotonic_ns()}", "type": "message", "role": "assistant", "model": body.get("model"),
                "content": content, "stop_reason": "tool_use" if answer.tool else "end_turn", "stop_sequence": None,
                "usage": {"input_tokens": answer.prompt_tokens, "output_tokens": max(1, len(answer.words))}}

    async def _stream(self, body: dict[str, Any], answer: Answer, fault: Fault, send: Send) -> None:
        event = await open_sse(send)

        async def emit(kind: str, data: dict[str, Any]) -> None:
            await event(b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **data}) + b"\n\n")

        message = {"id": f"msg_{time.monotonic_ns()}", "type": "message", "role": "assistant",
                   "model": body.get("model"), "content": [], "stop_reason": None, "stop_sequence": None,
                   "usage": {"input_tokens": answer.prompt_tokens, "output_tokens": 1}}
        await emit("message_start", {"message": message})
        if answer.tool is not None:
            name, arguments = answer.tool
            await emit("content_block_start", {"index": 0, "content_block": {
                "type": "tool_use", "id": "toolu_01", "name": name, "input": {}}})
            text = orjson.dumps(arguments).decode()
            for piece in (text[: len(text) // 2], text[len(text) // 2:]):
                await emit("content_block_delta", {"index": 0, "delta": {"type": "input_json_delta",
                                                                          "partial_json": piece}})
        else:
            await emit("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
            await event(b"event: ping\ndata: {\"type\": \"ping\"}\n\n")
            for i, word in enumerate(answer.words):
                if i == fault.cut_after:
                    raise ConnectionResetError("fake anthropic: cut mid-stream")
                await emit("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": word}})
        await emit("content_block_stop", {"index": 0})
        await emit("message_delta", {"delta": {"stop_reason": "tool_use" if answer.tool else "end_turn",
                                               "stop_sequence": None},
                                     "usage": {"output_tokens": max(1, len(answer.words))}})
        await emit("message_stop", {})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _error(self, send: Send, status: int, kind: str, message: str, retry_after: str | None = None) -> None:
        extra = [(b"retry-after", retry_after.encode())] if retry_after else []
        body = {"type": "error", "error": {"type": kind, "message": message}}
        await send_bytes(send, status, orjson.dumps(body), JSON, extra)


class FakeGemini(Fake):
    """Gemini's API: POST /v1beta/models/{model}:generateContent, and :streamGenerateContent?alt=sse."""

    async def answer(self, seen: Seen, fault: Fault, send: Send) -> None:
        found = GEMINI_PATH.match(seen.path)
        if found is None:
            await self._error(send, 404, "NOT_FOUND", f"no route {seen.path}")
        elif "x-goog-api-key" not in seen.headers and "key=" not in seen.query:
            await self._error(send, 401, "UNAUTHENTICATED", "API key not valid")
        elif fault.status is not None:
            kind = {429: "RESOURCE_EXHAUSTED", 503: "UNAVAILABLE", 500: "INTERNAL"}.get(fault.status,
                                                                                       "INVALID_ARGUMENT")
            await self._error(send, fault.status, kind, fault.message or f"{self.label}: {kind}", fault.retry_after)
        elif self.too_long(seen.body):
            await self._error(send, 400, "INVALID_ARGUMENT",
                              f"The input token count ({len(orjson.dumps(seen.body))}) exceeds the maximum number "
                              f"of tokens allowed ({self.context_limit}).")
        elif found["method"] == "streamGenerateContent":
            await self._stream(found["model"], self._answer(seen.body), fault, send, "alt=sse" in seen.query)
        else:
            answer = self._answer(seen.body)
            await send_bytes(send, 200, orjson.dumps(self._chunk(found["model"], answer, answer.words, True)), JSON)

    def _answer(self, body: dict[str, Any]) -> Answer:
        tools = [d for t in body.get("tools") or [] for d in t.get("functionDeclarations") or t.get(
            "function_declarations") or []]
        mode = (((body.get("toolConfig") or {}).get("functionCallingConfig") or {}).get("mode") or "AUTO").upper()
        images = sum(1 for c in body.get("contents", []) for part in c.get("parts", [])
                     if "inline_data" in part or "inlineData" in part)
        prompt = len(orjson.dumps(body.get("contents"))) // 4
        if tools and mode != "NONE":
            return Answer([], (tools[0]["name"], {"city": "Paris"}), prompt)
        config = body.get("generationConfig") or {}
        if "application/json" in (config.get("response_mime_type"), config.get("responseMimeType")):
            return Answer([orjson.dumps({"answer": self.label}).decode()], None, prompt)
        return Answer(self.text_words(f" saw {images} image(s)" if images else ""), None, prompt)

    def _chunk(self, model: str, answer: Answer, words: list[str], last: bool) -> dict[str, Any]:
        parts: list[dict[str, Any]]
        if answer.tool is not None:
            parts = [{"functionCall": {"name": answer.tool[0], "args": answer.tool[1]}}]
        else:
            parts = [{"text": "".join(words)}]
        candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
        if last:
            candidate["finishReason"] = "STOP"
        completion = max(1, len(answer.words))
        return {"candidates": [candidate], "modelVersion": model, "responseId": "resp-1",
                "usageMetadata": {"promptTokenCount": answer.prompt_tokens, "candidatesTokenCount": completion,
                                  "totalTokenCount": answer.prompt_tokens + completion}}

    async def _stream(self, model: str, answer: Answer, fault: Fault, send: Send, sse: bool) -> None:
        if not sse:
            await self._error(send, 400, "INVALID_ARGUMENT", "this fake streams only with alt=sse")
            return
        event = await open_sse(send)
        pieces = [answer.words[i:i + 1] for i in range(len(answer.words))] or [[]]
        for i, words in enumerate(pieces):
            if i == fault.cut_after:
                raise ConnectionResetError("fake gemini: cut mid-stream")
            await event(b"data: " + orjson.dumps(self._chunk(model, answer, words, i == len(pieces) - 1)) + b"\r\n\r\n")
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _error(self, send: Send, status: int, kind: str, message: str, retry_after: str | None = None) -> None:
        extra = [(b"retry-after", retry_after.encode())] if retry_after else []
        body = {"error": {"code": status, "message": message, "status": kind}}
        await send_bytes(send, status, orjson.dumps(body), JSON, extra)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
