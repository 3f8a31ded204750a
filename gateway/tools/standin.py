"""A stand-in OpenAI-compatible upstream for `switchyard demo` and the tests: it answers, and remembers what it saw.

It is not a model: it echoes the prompt, labelled with who answered, so routing can be seen.
Faults are chosen by setting `faults` (the next requests' behaviour) or a request's `x-standin-*` headers.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.asgi import Receive, Scope, Send, header_map, send_bytes

JSON = b"application/json"


@dataclass
class Fault:
    """How to misbehave on one request."""

    status: int | None = None
    delay_s: float = 0.0
    cut_after: int | None = None
    retry_after: str | None = None


@dataclass
class Seen:
    """One request as the stand-in received it."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]
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
            await _lifespan(receive, send)
            return
        headers = header_map(scope)
        raw = b""
        while True:
            message = await receive()
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        if scope["method"] == "GET" and scope["path"].endswith("/models"):
            data = [{"id": "standin", "object": "model", "created": 0, "owned_by": self.label}]
            await send_bytes(send, 200, orjson.dumps({"object": "list", "data": data}), JSON)
            return
        seen = Seen(scope["path"], headers, orjson.loads(raw or b"{}"))
        self.seen.append(seen)
        watcher = asyncio.get_running_loop().create_task(_watch(receive, seen.disconnected))
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

    async def _answer(self, seen: Seen, fault: Fault, send: Send) -> None:
        if fault.delay_s:
            await asyncio.sleep(fault.delay_s)
        if fault.status is not None:
            extra = [(b"retry-after", fault.retry_after.encode())] if fault.retry_after else []
            error = {"error": {"message": f"{self.label}: error {fault.status}", "type": "standin_error",
                               "code": fault.status, "param": None}}
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
            await self._stream(body, path, fault, send)
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

    async def _stream(self, body: dict[str, Any], path: str, fault: Fault, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        base = {"id": f"chatcmpl-{time.monotonic_ns()}", "object": "chat.completion.chunk",
                "created": int(time.time()), "model": body.get("model")}
        words = self._words(body)

        async def event(obj: dict[str, Any]) -> None:
            await send({"type": "http.response.body", "body": b"data: " + orjson.dumps(obj) + b"\n\n",
                        "more_body": True})

        await event({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                          "finish_reason": None}]})
        for i, word in enumerate(words):
            if i == fault.cut_after:
                raise ConnectionResetError("stand-in: cut mid-stream")
            await event({**base, "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]})
        await event({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = {"prompt_tokens": 10, "completion_tokens": len(words), "total_tokens": 10 + len(words)}
            await event({**base, "choices": [], "usage": usage})
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})


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
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})

        async def event(kind: str, data: dict[str, Any]) -> None:
            line = b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **data}) + b"\n\n"
            await send({"type": "http.response.body", "body": line, "more_body": True})

        await event("response.created", {"response": {**response, "status": "in_progress", "output": []}})
        for i, word in enumerate(words):
            if i == fault.cut_after:
                raise ConnectionResetError("stand-in: cut mid-stream")
            await event("response.output_text.delta", {"item_id": "msg_1", "output_index": 0, "content_index": 0,
                                                       "delta": word})
        await event("response.completed", {"response": response})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


METRICS_FORMATS = {  # each engine's own exposition of queue, running and cache, as its servers write it
    "vllm": ("# HELP vllm:num_requests_running Number of requests in model execution batches.\n"
             "# TYPE vllm:num_requests_running gauge\n"
             'vllm:num_requests_running{{engine="0",model_name="{model}"}} {running:.1f}\n'
             "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.\n"
             "# TYPE vllm:num_requests_waiting gauge\n"
             'vllm:num_requests_waiting{{engine="0",model_name="{model}"}} {waiting:.1f}\n'
             "# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.\n"
             "# TYPE vllm:kv_cache_usage_perc gauge\n"
             'vllm:kv_cache_usage_perc{{engine="0",model_name="{model}"}} {kv_cache}\n'),
    "sglang": ("# HELP sglang:num_running_reqs The number of running requests.\n"
               "# TYPE sglang:num_running_reqs gauge\n"
               'sglang:num_running_reqs{{engine_type="unified",model_name="{model}",tp_rank="0"}} {running:.1f}\n'
               "# HELP sglang:num_queue_reqs The number of requests in the waiting queue.\n"
               "# TYPE sglang:num_queue_reqs gauge\n"
               'sglang:num_queue_reqs{{engine_type="unified",model_name="{model}",tp_rank="0"}} {waiting:.1f}\n'
               "# HELP sglang:token_usage The token usage.\n"
               "# TYPE sglang:token_usage gauge\n"
               'sglang:token_usage{{engine_type="unified",model_name="{model}",tp_rank="0"}} {kv_cache}\n'),
    "llamacpp": ("# HELP llamacpp:requests_processing Number of requests processing.\n"
                 "# TYPE llamacpp:requests_processing gauge\n"
                 "llamacpp:requests_processing {running:.0f}\n"
                 "# HELP llamacpp:requests_deferred Number of requests deferred.\n"
                 "# TYPE llamacpp:requests_deferred gauge\n"
                 "llamacpp:requests_deferred {waiting:.0f}\n"),
}


class QueueingEngine:
    """A stand-in self-hosted engine that really queues: `slots` requests run at once, the rest wait their turn.

    Each request holds its slot for `service_s` (or, with `hold`, until `release()`), then answers as a StandIn.
    GET /metrics shows its queue in the named engine's own text format.
    """

    def __init__(self, label: str, slots: int, service_s: float = 0.0, engine: str = "vllm",
                 hold: bool = False) -> None:
        self.answer = StandIn(label)
        self.slots = slots
        self.service_s = service_s
        self.engine = engine
        self.waiting = 0
        self.running = 0
        self.arrivals = 0
        self.served = 0
        self.metrics_status = 200
        self.busy_slot_s = 0.0
        self._turns = asyncio.Semaphore(slots)
        self._released: asyncio.Event | None = asyncio.Event() if hold else None

    def release(self) -> None:
        """Let every held request finish, and every later one run through (call on the engine's loop)."""
        if self._released is not None:
            self._released.set()

    def metrics_text(self) -> str:
        """The engine's /metrics page now."""
        kv_cache = min(1.0, self.running / self.slots) if self.slots else 0.0
        return METRICS_FORMATS[self.engine].format(model="standin", running=self.running, waiting=self.waiting,
                                                   kv_cache=kv_cache)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["method"] == "GET" and scope["path"] == "/metrics":
            await send_bytes(send, self.metrics_status, self.metrics_text().encode(), b"text/plain; version=0.0.4")
            return
        if scope["method"] == "GET":
            await self.answer(scope, receive, send)
            return
        self.arrivals += 1
        self.waiting += 1
        try:
            await self._turns.acquire()
        finally:
            self.waiting -= 1
        self.running += 1
        started = time.monotonic()
        try:
            await self._serve()
            await self.answer(scope, receive, send)
        finally:
            self.running -= 1
            self.served += 1
            self.busy_slot_s += time.monotonic() - started
            self._turns.release()

    async def _serve(self) -> None:
        if self._released is not None:
            await self._released.wait()
        elif self.service_s:
            await asyncio.sleep(self.service_s)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _watch(receive: Receive, disconnected: asyncio.Event) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    disconnected.set()
