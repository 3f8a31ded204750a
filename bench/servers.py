"""The two servers the benchmark measures the gateway against: a fast mock upstream and the floor proxy.

    python bench/servers.py mock  --port 9100 [--chunks 100]
    python bench/servers.py floor --port 9300 --upstream http://127.0.0.1:9100

`mock` answers POST .../chat/completions (JSON, or SSE when "stream" is true: a role event, `--chunks`
content events of "lorem ", a finish event, a usage event when asked, `[DONE]`), POST .../embeddings and
GET .../models. `floor` is the thinnest proxy this stack allows (bare ASGI, one aiohttp session, bytes
forwarded as they come, nothing parsed or decided): no Python gateway can be faster, so the gateway is
quoted as a multiple of it. Both run under uvicorn with uvloop and httptools, like the gateway.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import uvicorn

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def read_body(receive: Receive) -> bytes:
    """The whole request body."""
    body = b""
    while True:
        message = await receive()
        body += bytes(message.get("body", b""))
        if not message.get("more_body"):
            return body


async def lifespan(receive: Receive, send: Send, startup: Callable[[], None] | None = None,
                   shutdown: Callable[[], Awaitable[None]] | None = None) -> None:
    """Answer uvicorn's lifespan messages, running startup and shutdown hooks."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            if startup:
                startup()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if shutdown:
                await shutdown()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def send_json(send: Send, status: int, payload: object) -> None:
    """One JSON response with its length."""
    data = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


class Mock:
    """An OpenAI-compatible upstream that answers at once: the benchmark's model."""

    def __init__(self, chunks: int) -> None:
        self.chunks = chunks

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        path = scope["path"]
        if scope["method"] == "GET" and path.endswith("/models"):
            await send_json(send, 200, {"object": "list", "data": [{"id": "mock-model", "object": "model"}]})
            return
        request = json.loads(await read_body(receive) or b"{}")
        prompt_tokens = max(1, len(json.dumps(request.get("messages", request.get("input", "")))) // 4)
        if path.endswith("/embeddings"):
            inputs = request.get("input", "")
            count = len(inputs) if isinstance(inputs, list) else 1
            await send_json(send, 200, {"object": "list", "model": request.get("model"), "data": [
                {"object": "embedding", "index": i, "embedding": [0.0] * 8} for i in range(count)],
                "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}})
        elif not path.endswith("/chat/completions"):
            await send_json(send, 404, {"error": {"message": f"no route {path}", "type": "not_found"}})
        elif request.get("stream"):
            await self.stream(send, request, prompt_tokens)
        else:
            message = {"role": "assistant", "content": "lorem " * self.chunks}
            await send_json(send, 200, {**self.head(request, "chat.completion"), "usage": self.usage(prompt_tokens),
                                        "choices": [{"index": 0, "finish_reason": "stop", "message": message}]})

    def head(self, request: dict[str, Any], kind: str) -> dict[str, Any]:
        return {"id": f"chatcmpl-{time.monotonic_ns()}", "object": kind, "created": int(time.time()),
                "model": request.get("model", "mock-model")}

    def usage(self, prompt_tokens: int) -> dict[str, int]:
        return {"prompt_tokens": prompt_tokens, "completion_tokens": self.chunks,
                "total_tokens": prompt_tokens + self.chunks}

    async def stream(self, send: Send, request: dict[str, Any], prompt_tokens: int) -> None:
        """The SSE answer: role, content events, finish, usage if asked, [DONE]."""
        head = self.head(request, "chat.completion.chunk")

        async def event(payload: object) -> None:
            await send({"type": "http.response.body", "body": b"data: " + json.dumps(payload).encode() + b"\n\n",
                        "more_body": True})

        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]})
        await event({**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                          "finish_reason": None}]})
        for _ in range(self.chunks):
            await event({**head, "choices": [{"index": 0, "delta": {"content": "lorem "}, "finish_reason": None}]})
        await event({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        if (request.get("stream_options") or {}).get("include_usage"):
            await event({**head, "choices": [], "usage": self.usage(prompt_tokens)})
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})


class Floor:
    """The thinnest proxy: the request's bytes to the upstream, the upstream's bytes back, nothing else."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.session: aiohttp.ClientSession | None = None

    def open(self) -> None:
        self.session = aiohttp.ClientSession(self.upstream, connector=aiohttp.TCPConnector(limit=0))

    async def close(self) -> None:
        if self.session:
            await self.session.close()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send, self.open, self.close)
            return
        assert self.session is not None
        body = await read_body(receive)
        async with self.session.post(scope["path"], data=body, headers={"content-type": "application/json"}) as r:
            content_type = r.headers.get("content-type", "application/json").encode()
            if content_type.startswith(b"text/event-stream"):
                await send({"type": "http.response.start", "status": r.status,
                            "headers": [(b"content-type", content_type)]})
                async for chunk in r.content.iter_any():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b""})
                return
            data = await r.read()
        await send({"type": "http.response.start", "status": r.status,
                    "headers": [(b"content-type", content_type), (b"content-length", str(len(data)).encode())]})
        await send({"type": "http.response.body", "body": data})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("server", choices=["mock", "floor"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--chunks", type=int, default=100, help="mock: content events per stream, words per answer")
    parser.add_argument("--upstream", default="http://127.0.0.1:9100", help="floor: where to forward")
    args = parser.parse_args()
    app = Mock(args.chunks) if args.server == "mock" else Floor(args.upstream)
    uvicorn.run(app, host="127.0.0.1", port=args.port, loop="uvloop", http="httptools", log_level="warning",
                access_log=False)


if __name__ == "__main__":
    main()
