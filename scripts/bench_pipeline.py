"""Time the gateway's own work on a request: the whole app in this process, fed by hand, with an upstream that
answers at once (no sockets, no uvicorn, no aiohttp), so what is left is the pipeline itself.

    python scripts/bench_pipeline.py [--policy bench/policy.yaml] [--requests 20000] [--warm 2000]
    bash scripts/count_instructions [POLICY]     # the same, as instructions a request (callgrind): repeatable

Prints microseconds a request. Times move with whatever else the machine runs; instruction counts do not, so
compare builds with scripts/count_instructions, and quote gatebench for the speed of the whole gateway.
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson
import uvloop

from gateway.asgi import Message
from gateway.pipeline.runtime import Runtime
from gateway.serving.app import Gateway, Settings
from gateway.serving.lifespan import lifespan
from gateway.upstreams.base import Client, Exchange
from gateway.upstreams.openai import OpenAIUpstream
from gateway.upstreams.redact import Redactor
from gateway.upstreams.spec import UpstreamSpec

ANSWER = orjson.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": "mock-model",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Routing sends each request where it "
                                         "belongs, by rules a team can read."}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 14, "total_tokens": 26}})
BODY = orjson.dumps({"model": "bench-model", "max_tokens": 32,
                     "messages": [{"role": "user", "content": "Write one sentence about routing."}]})
HEADERS = [(b"host", b"127.0.0.1:9400"), (b"content-type", b"application/json"),
           (b"authorization", b"Bearer sk-bench"), (b"content-length", str(len(BODY)).encode())]


class AnsweredAtOnce:
    """An upstream's answer, whole and at once."""

    redacted = True
    status = 200
    content_type = b"application/json"

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream

    async def read(self) -> bytes:
        return ANSWER

    async def chunks(self) -> AsyncIterator[bytes]:
        yield ANSWER

    def retry_after(self) -> str | None:
        return None

    def close(self) -> None:
        return None


class AtOnce:
    """An OpenAI-compatible upstream that sends nothing and answers at once, encoding as the real client does."""

    def __init__(self, name: str, spec: UpstreamSpec) -> None:
        self.name = name
        self.spec = spec
        self.redact = Redactor(None)  # as OpenAIUpstream: its exchanges come redacted
        self._encode = OpenAIUpstream(name, spec, None).encode  # type: ignore[arg-type]  # encode sends nothing

    def encode(self, body: Mapping[str, Any], stream: bool) -> bytes:
        return self._encode(body, stream)

    async def send(self, path: str, body: bytes, client_headers: Mapping[str, str], stream: bool) -> Exchange:
        return AnsweredAtOnce(self.name)

    async def aclose(self) -> None:
        return None


async def run(policy: str, requests: int, warm: int) -> float:
    """Microseconds a request, after warm requests."""
    gateway = Gateway(Settings(policy=policy))
    async with lifespan(gateway.parts):
        built = gateway.parts.runtime
        assert built is not None
        upstreams: dict[str, Client] = {name: AtOnce(name, client.spec) for name, client in built.upstreams.items()}
        gateway.parts.runtime = Runtime(built.policy, upstreams, built.session)
        scope: dict[str, Any] = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": HEADERS}
        sent: list[Message] = []

        async def receive() -> Message:
            return {"type": "http.request", "body": BODY, "more_body": False}

        async def send(message: Message) -> None:
            sent.append(message)

        for _ in range(warm):
            await gateway(scope, receive, send)
        assert sent[-2]["status"] == 200, sent[-2:]
        gc.collect()
        gc.freeze()  # as `switchyard serve` does (gateway/serving/server.py: tune_gc)
        started = time.perf_counter()
        for _ in range(requests):
            await gateway(scope, receive, send)
            sent.clear()
        return (time.perf_counter() - started) / max(requests, 1) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy", default="bench/policy.yaml")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--warm", type=int, default=2_000)
    args = parser.parse_args()
    gc.set_threshold(20_000, *gc.get_threshold()[1:])
    print(f"{uvloop.run(run(args.policy, args.requests, args.warm)):.2f} us a request ({args.policy})")


if __name__ == "__main__":
    main()
