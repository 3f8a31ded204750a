"""The gateway's CPU per request on the Messages API against the same on chat completions; print a table.

  python scripts/bench_messages.py [--requests 2000] [--clients 16]

Stand-in upstreams (an OpenAI-compatible one, and a fake Anthropic server) run in one process, `switchyard serve`
in another; an aiohttp client sends plain and streamed requests: chat completions passed through, Messages
passed through (an upstream listing `messages`), and Messages translated to chat completions. The figure is the
gateway process's CPU time (user + system, from /proc) per request: steadier than throughput on a shared
machine. Quote ratios between rows, not absolute times.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml

ROOT = Path(__file__).resolve().parents[1]
KEY = "sk-sy-bench-0123456789abcdef0123456789abcdef"
UPSTREAMS = """
import sys, asyncio, uvicorn
from gateway.tools.standin import StandIn
from gateway.tools.standin.messages import MessagesStandIn
async def main():
    apps = ((StandIn("chat", chunks=20), sys.argv[1]), (MessagesStandIn("msgs", chunks=20), sys.argv[2]))
    servers = [uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=int(port), log_level="warning"))
               for app, port in apps]
    await asyncio.gather(*(s.serve() for s in servers))
asyncio.run(main())
"""
HI = [{"role": "user", "content": "Say hello."}]
CASES = {  # name: (path, route, extra body)
    "chat completions, passed through": ("/v1/chat/completions", "chat", {}),
    "messages, passed through": ("/v1/messages", "native", {"max_tokens": 64}),
    "messages, translated": ("/v1/messages", "translated", {"max_tokens": 64}),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not start")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def policy(chat_port: int, messages_port: int) -> dict[str, Any]:
    def upstream(port: int, **extra: Any) -> dict[str, Any]:
        return {"base_url": f"http://127.0.0.1:{port}/v1", "model": "m", "hosting": "self",
                "cost": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}, **extra}
    return {"version": 1,
            "upstreams": {"chat": upstream(chat_port), "native": upstream(messages_port, capabilities=["messages"])},
            "models": {"chat": {"candidates": ["chat"]}, "native": {"candidates": ["native"]},
                       "translated": {"candidates": ["chat"]}},
            "tenants": {"bench": {"keys": ["sha256:" + hashlib.sha256(KEY.encode()).hexdigest()]}}}


async def drive(url: str, path: str, body: dict[str, Any], requests: int, clients: int) -> None:
    headers = {"authorization": f"Bearer {KEY}"}
    left = [requests]
    async with aiohttp.ClientSession() as session:
        async def client() -> None:
            while left[0] > 0:
                left[0] -= 1
                async with session.post(url + path, json=body, headers=headers) as response:
                    await response.read()
                    assert response.status == 200, response.status
        await asyncio.gather(*(client() for _ in range(clients)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=16)
    args = parser.parse_args()
    chat_port, messages_port, gateway_port = free_port(), free_port(), free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    folder = Path(tempfile.mkdtemp())
    (folder / "policy.yaml").write_text(yaml.safe_dump(policy(chat_port, messages_port)))
    upstreams = subprocess.Popen([sys.executable, "-c", UPSTREAMS, str(chat_port), str(messages_port)], env=env)
    gateway = subprocess.Popen([sys.executable, "-m", "gateway.tools.cli", "serve", "--policy",
                                str(folder / "policy.yaml"), "--port", str(gateway_port), "--log-level", "warning"],
                               env=env)
    url = f"http://127.0.0.1:{gateway_port}"
    try:
        for port in (chat_port, messages_port, gateway_port):
            wait_ready(f"http://127.0.0.1:{port}")
        print(f"{'case':36} {'plain ms CPU/req':>17} {'stream ms CPU/req':>18}")
        for name, (path, route, extra) in CASES.items():
            figures = []
            for stream in (False, True):
                body = {"model": route, "messages": HI, "stream": stream, **extra}
                asyncio.run(drive(url, path, body, 200, args.clients))  # warm up
                before = cpu_seconds(gateway.pid)
                asyncio.run(drive(url, path, body, args.requests, args.clients))
                figures.append((cpu_seconds(gateway.pid) - before) / args.requests * 1000)
            print(f"{name:36} {figures[0]:17.3f} {figures[1]:18.3f}")
    finally:
        for process in (gateway, upstreams):
            process.terminate()
            process.wait(timeout=30)


if __name__ == "__main__":
    main()
