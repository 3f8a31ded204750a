"""A stand-in self-hosted engine that really queues, and shows its queue on /metrics as vLLM, SGLang or llama.cpp do."""

from __future__ import annotations

import asyncio
import time

from gateway.asgi import Receive, Scope, Send, send_bytes
from gateway.tools.standin.app import StandIn, lifespan

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
            await lifespan(receive, send)
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
