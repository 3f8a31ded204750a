"""A gateway in front of fault servers (gateway/tools/standin), and streams read raw from it, for the stream tests."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

from gateway.serving.app import Gateway, Settings
from gateway.tools.standin import Behaviour, FaultServer
from tests.conftest import KEY, Loop, Served, settled_spend, upstream_spec, write_policy

AUTH = {"authorization": f"Bearer {KEY}"}
HELLO = [{"role": "user", "content": "Hello there"}]
SLACK_S = 1.0  # what a loaded 2-core machine may add to a bound computed from the settings
BASE = {"backoff_ms": [1, 5], "per_try_timeout_s": 5, "ttft_timeout_s": 5, "deadline_s": 20}


@dataclass
class Faults:
    """Fault servers started on a test's loop; stop() closes every one of them."""

    loop: Loop
    made: list[FaultServer] = field(default_factory=list)

    def __call__(self, label: str, *script: Behaviour, default: Behaviour | None = None) -> FaultServer:
        server = FaultServer(label, script, default)
        self.loop.run(server.start())
        self.made.append(server)
        return server

    def stop(self) -> None:
        for server in self.made:
            self.loop.run(server.stop())


@dataclass
class Streamed:
    """A raw SSE response as the client received it."""

    raw: bytes
    seconds: float

    @property
    def events(self) -> list[dict[str, Any]]:
        return [orjson.loads(e[6:]) for e in self.raw.split(b"\n\n") if e.startswith(b"data: {")]

    @property
    def chunks(self) -> list[dict[str, Any]]:
        """The events that are chat chunks (not an error)."""
        return [e for e in self.events if "error" not in e]

    @property
    def text(self) -> str:
        return "".join(e["choices"][0]["delta"].get("content") or "" for e in self.chunks if e.get("choices"))

    @property
    def complete(self) -> bool:
        return self.raw.endswith(b"data: [DONE]\n\n") and self.raw.count(b"[DONE]") == 1

    @property
    def error_code(self) -> str | None:
        last = self.events[-1] if self.events else {}
        return last["error"]["code"] if "error" in last else None


@dataclass
class Rig:
    """A gateway with a route 'chat' over fault servers."""

    served: Served

    @property
    def base_url(self) -> str:
        return self.served.url + "/v1"

    def stream(self, **extra: Any) -> Streamed:
        started = time.monotonic()
        with httpx.stream("POST", self.base_url + "/chat/completions", headers=AUTH, timeout=30,
                          json={"model": "chat", "messages": HELLO, "stream": True, **extra}) as response:
            assert response.status_code == 200, response.read()
            raw = response.read()
        return Streamed(raw, time.monotonic() - started)

    def metric(self, name: str, **labels: str) -> float | None:
        """The sum of the samples from /metrics whose labels include labels, or None when there are none."""
        found: float | None = None
        for line in httpx.get(self.served.url + "/metrics").text.splitlines():
            key, _, value = line.rpartition(" ")
            metric_name, _, label_text = key.partition("{")
            if not line.startswith("#") and metric_name == name and labels.items() <= dict(
                    re.findall(r'(\w+)="([^"]*)"', label_text)).items():
                found = (found or 0.0) + float(value)
        return found


def rig(loop: Loop, tmp_path: Path, servers: dict[str, FaultServer], resilience: dict[str, Any] | None = None,
        continuation: tuple[str, ...] = (), admin_key: str | None = None, capabilities: tuple[str, ...] = (),
        **sections: Any) -> Rig:
    """A route 'chat' over servers in order, each declaring capabilities; those named in continuation also it."""
    upstreams = {name: upstream_spec(server.url, model=f"{name}-model", capabilities=[
                     *capabilities, *(["continuation"] if name in continuation else [])])
                 for name, server in servers.items()}
    path = write_policy(tmp_path, upstreams, {"chat": {"candidates": list(servers)}},
                        resilience={**BASE, **(resilience or {})}, **sections)
    return Rig(loop.serve(Gateway(Settings(policy=str(path), reload_interval_s=0, admin_key=admin_key))))


def spend_row(r: Rig, requests: int, admin_key: str) -> dict[str, Any]:
    """acme's spend, read from /admin/spend once its primary upstream shows `requests` settled and nothing reserved."""
    return settled_spend(r.served.url, admin_key, lambda row: row["upstreams"].get("primary", {}).get("requests")
                         == requests, what=f"{requests} streams settled in the spend")
