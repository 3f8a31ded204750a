"""`switchyard demo`: the gateway plus two labelled stand-in upstreams, for a first try with no GPU and no keys."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import uvicorn

from gateway.operations import logs
from gateway.routing.policy.model import hash_key
from gateway.serving.app import Gateway, Settings
from gateway.serving.server import DrainingServer, ServeOptions, uvicorn_config
from gateway.tools.standin import StandIn

DEMO_KEY = "sk-sy-demo-not-a-secret-0123456789abcdef"

POLICY = """\
# The demo policy: two stand-in upstreams on loopback. Neither is a model; each labels its answers.
version: 1
upstreams:
  demo-self-hosted:
    base_url: http://127.0.0.1:{self_port}/v1
    model: demo-open-model
    region: eu-west
    hosting: self
    cost: {{gpu_hour_usd: 2.0, tokens_per_second: 2000}}
    context_window: 32768
    # no `capabilities`: tools, response_format, images and the Responses API may all go here
  demo-proprietary:
    base_url: http://127.0.0.1:{third_party_port}/v1
    model: demo-proprietary-model
    region: us
    hosting: third_party
    cost: {{input_per_mtok: 2.5, output_per_mtok: 10.0}}
    context_window: 128000
models:
  chat: {{candidates: [demo-self-hosted, demo-proprietary], objective: cost}}
  smart: {{candidates: [demo-proprietary, demo-self-hosted], objective: priority}}
  embed: {{candidates: [demo-self-hosted]}}
data_classes:
  public: {{}}
  personal: {{hosting: [self]}}
classify:
  detectors:
    - {{detect: [email, phone, credit_card, iban, national_id], class: personal}}
tenants:
  demo:
    keys: ["{key_hash}"]
"""


class CannotListen(Exception):
    """The demo cannot listen where it was asked to (a port in use, a host that is not this machine's)."""


def demo_policy(folder: Path, self_port: int, third_party_port: int) -> Path:
    """Write the demo policy, pointing at the stand-ins' ports, into folder and return its path."""
    path = folder / "demo.yaml"
    path.write_text(POLICY.format(self_port=self_port, third_party_port=third_party_port,
                                  key_hash=hash_key(DEMO_KEY)))
    return path


def listen(host: str, port: int, what: str) -> socket.socket:
    """A socket bound to host:port (0: a free port), or CannotListen naming what wanted it."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except OSError as exc:
        raise CannotListen(f"{what} cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise CannotListen(f"{what} cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def run_demo(host: str, port: int, log_level: str, upstream_ports: tuple[int, int] = (0, 0)) -> None:
    """Serve the stand-ins and the gateway until interrupted; CannotListen before anything starts."""
    sockets: list[socket.socket] = []
    try:
        sockets.append(listen(host, port, "the gateway (--port)"))
        for upstream_port in upstream_ports:
            sockets.append(listen("127.0.0.1", upstream_port, "a stand-in upstream (--upstream-ports)"))
        with tempfile.TemporaryDirectory(prefix="switchyard-demo-") as folder:
            port, self_port, third_party_port = (int(sock.getsockname()[1]) for sock in sockets)
            path = demo_policy(Path(folder), self_port, third_party_port)
            logs.configure(log_level)
            print(_banner(host, port, (self_port, third_party_port), path), flush=True)
            asyncio.run(_serve_all(Gateway(Settings(policy=str(path))), sockets, log_level))
    finally:
        for sock in sockets:
            sock.close()


async def _serve_all(gateway: Gateway, sockets: list[socket.socket], log_level: str) -> None:
    """Serve until the gateway is told to stop, then stop the stand-ins behind it."""
    gateway_sock, *standin_socks = sockets
    apps = (StandIn("demo self-hosted stand-in"), StandIn("demo proprietary stand-in"))
    standins = [StandInServer(uvicorn.Config(app, log_level="warning", log_config=None, access_log=False))
                for app in apps]
    tasks = [asyncio.create_task(server.serve(sockets=[sock])) for server, sock in zip(standins, standin_socks,
                                                                                         strict=True)]
    try:
        options = ServeOptions(log_level=log_level)
        await DrainingServer(uvicorn_config(gateway, options)).serve(sockets=[gateway_sock])
    finally:
        for server in standins:
            server.should_exit = True
        await asyncio.gather(*tasks)


class StandInServer(uvicorn.Server):
    """A stand-in's server: it leaves signals to the gateway's, which stops it, and its start and stop lines to the
    gateway's too (three servers' lines in one process would say each thing three times)."""

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        logs.quiet.set(True)  # this task's, and only its
        await super().serve(sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _banner(host: str, port: int, upstream_ports: tuple[int, int], path: Path) -> str:
    self_port, third_party_port = upstream_ports
    return f"""\
Switchyard demo: the gateway on http://{host}:{port}/v1 and two DEMO STAND-IN upstreams (not models):
  demo-self-hosted  (hosting: self, eu-west)   on 127.0.0.1:{self_port}
  demo-proprietary  (hosting: third_party, us) on 127.0.0.1:{third_party_port}
Routes: chat (cheapest first), smart (proprietary first), embed. Policy: {path}

  from openai import OpenAI
  client = OpenAI(base_url="http://{host}:{port}/v1", api_key="{DEMO_KEY}")
  r = client.chat.completions.with_raw_response.create(model="smart", messages=[{{"role": "user", "content": "hi"}}])
  print(r.headers["x-switchyard-upstream"], r.parse().choices[0].message.content)
  print(client.responses.create(model="chat", input="hi").output_text)   # the Responses API too

Personal data (try an e-mail address in the prompt) stays on demo-self-hosted even on route 'smart'.
Fail demo-self-hosted's next two answers and route 'chat' falls back to demo-proprietary:
  curl -d '{{"status": 503, "count": 2}}' http://127.0.0.1:{self_port}/standin/faults
Metrics: http://{host}:{port}/metrics. Ctrl-C stops all three.
"""
