"""Fixtures: real servers on loopback (gateway and stand-in upstreams) on an event loop in a background thread."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import uvicorn
import yaml

from gateway.asgi import Receive, Scope, Send
from gateway.serving.app import Gateway, Settings
from gateway.tools.standin import StandIn

KEY = "sk-sy-test-key-0123456789abcdef0123456789"
OTHER_KEY = "sk-sy-other-key-0123456789abcdef012345678"


# Timeouts no test means to reach: generous, so that a loaded machine never turns a slow answer into a failure.
# A test about a timeout sets its own, short one.
# A busy test machine can hold a process for longer than the 100 ms a production Redis call is given.
REDIS_TIMEOUT_S = 5.0
RESILIENCE = {"backoff_ms": [1, 5], "per_try_timeout_s": 60, "ttft_timeout_s": 60, "deadline_s": 120}


def key_hash(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    """Poll predicate until it holds, failing the test at the deadline."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def settled_spend(url: str, admin_key: str, ready: Callable[[dict[str, Any]], bool] = lambda row: True,
                  what: str = "the spend to settle") -> dict[str, Any]:
    """acme's spend today from /admin/spend, once nothing is reserved any more and ready(its row) holds."""
    row: dict[str, Any] = {}

    def settled() -> bool:
        response = httpx.get(f"{url}/admin/spend", params={"tenant": "acme", "window": "day"},
                             headers={"authorization": f"Bearer {admin_key}"}, timeout=5)
        assert response.status_code == 200, response.text
        row.update(response.json()["tenants"][0])
        return bool(row["reserved_usd"] == 0 and ready(row))

    wait_for(settled, what=what)
    return row


@dataclass
class Served:
    """A server running on the background loop."""

    server: uvicorn.Server
    task: Future[None]

    @property
    def port(self) -> int:
        return int(self.server.servers[0].sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class Loop:
    """An event loop in a daemon thread that runs servers for a test."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.served: list[Served] = []
        self.clients: list[openai.OpenAI] = []

    def settled(self) -> None:
        """Return once the loop has finished the step it is in: a request whose answer the client has is then done
        (its metrics counted, its audit record written), as both happen in the step that sends its last bytes."""
        asyncio.run_coroutine_threadsafe(asyncio.sleep(0), self.loop).result(timeout=30)

    def client(self, base_url: str, key: str = KEY, **options: Any) -> openai.OpenAI:
        """An openai client closed when the test ends, so no socket outlives it."""
        made = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, **options)
        self.clients.append(made)
        return made

    def serve(self, app: Callable[[Scope, Receive, Send], Any], drain_s: float = 5.0) -> Served:
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on",
                                loop="none", timeout_graceful_shutdown=drain_s)
        server = uvicorn.Server(config)
        server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        task = asyncio.run_coroutine_threadsafe(server.serve(), self.loop)
        wait_for(lambda: server.started or task.done(), what="server start")
        if task.done():
            task.result()
        served = Served(server, task)
        self.served.append(served)
        return served

    def stop(self, served: Served) -> None:
        served.server.should_exit = True
        served.task.result(timeout=30)

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    def close(self) -> None:
        for made in self.clients:
            made.close()
        for served in reversed(self.served):
            if not served.task.done():
                self.stop(served)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=30)
        self.loop.close()


@pytest.fixture
def loop() -> Iterator[Loop]:
    running = Loop()
    yield running
    running.close()


def upstream_spec(url: str, model: str = "upstream-model", **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"base_url": url + "/v1", "model": model, "region": "eu-west", "hosting": "self",
                            "cost": {"input_per_mtok": 1.0, "output_per_mtok": 2.0},
                            "capabilities": ["tools", "json", "vision"]}
    spec.update(extra)
    return spec


def write_policy(folder: Path, upstreams: dict[str, dict[str, Any]], models: dict[str, Any],
                 **sections: Any) -> Path:
    """Write a policy with two tenants (KEY: all routes; OTHER_KEY: only the first) and return its path."""
    first = next(iter(models))
    doc: dict[str, Any] = {
        "version": 1, "upstreams": upstreams, "models": models,
        "tenants": {"acme": {"keys": [key_hash(KEY)]}, "limited": {"keys": [key_hash(OTHER_KEY)], "models": [first]}},
        "resilience": dict(RESILIENCE),
    }
    doc.update(sections)
    path = folder / "policy.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@dataclass
class Stack:
    """A gateway and its stand-in upstreams, all on loopback."""

    gateway: Gateway
    served: Served
    upstreams: dict[str, StandIn]
    loop: Loop

    @property
    def base_url(self) -> str:
        return self.served.url + "/v1"

    def client(self, key: str = KEY, **options: Any) -> openai.OpenAI:
        return self.loop.client(self.base_url, key, **options)


def start_stack(loop: Loop, folder: Path, names: tuple[str, ...] = ("primary", "fallback"),
                models: dict[str, Any] | None = None, settings: dict[str, Any] | None = None,
                **sections: Any) -> Stack:
    """Stand-ins named names, a route 'chat' over them in order, and a gateway in front."""
    standins = {name: StandIn(name) for name in names}
    specs = {}
    for name, app in standins.items():
        extra = sections.pop(f"upstream_{name}", {})
        specs[name] = upstream_spec(loop.serve(app).url, model=f"{name}-model", **extra)
    routes = models or {"chat": {"candidates": list(names)}}
    path = write_policy(folder, specs, routes, **sections)
    gateway = Gateway(Settings(policy=str(path), **{"redis_timeout_s": REDIS_TIMEOUT_S, **(settings or {})}))
    return Stack(gateway, loop.serve(gateway), standins, loop)


@pytest.fixture
def stack(loop: Loop, tmp_path: Path) -> Stack:
    return start_stack(loop, tmp_path)
