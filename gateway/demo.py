"""`switchyard demo`: the gateway plus two labelled stand-in upstreams, for a first try with no GPU and no keys."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

import uvicorn

from gateway import logs
from gateway.app import Gateway, Settings
from gateway.policy.model import hash_key
from gateway.server import DrainingServer, ServeOptions, uvicorn_config
from gateway.standin import StandIn

DEMO_KEY = "sk-sy-demo-not-a-secret-0123456789abcdef"
SELF_PORT, THIRD_PARTY_PORT = 9101, 9102

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
    capabilities: [tools, json]
  demo-proprietary:
    base_url: http://127.0.0.1:{third_party_port}/v1
    model: demo-proprietary-model
    region: us
    hosting: third_party
    cost: {{input_per_mtok: 2.5, output_per_mtok: 10.0}}
    context_window: 128000
    capabilities: [tools, json, vision]
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


def demo_policy(folder: Path) -> Path:
    """Write the demo policy into folder and return its path."""
    path = folder / "demo.yaml"
    path.write_text(POLICY.format(self_port=SELF_PORT, third_party_port=THIRD_PARTY_PORT, key_hash=hash_key(DEMO_KEY)))
    return path


def run_demo(host: str, port: int, log_level: str) -> None:
    """Serve the stand-ins and the gateway until interrupted."""
    with tempfile.TemporaryDirectory(prefix="switchyard-demo-") as folder:
        path = demo_policy(Path(folder))
        logs.configure(log_level)
        print(_banner(host, port, path), flush=True)
        asyncio.run(_serve_all(Gateway(Settings(policy=str(path))), host, port, log_level))


async def _serve_all(gateway: Gateway, host: str, port: int, log_level: str) -> None:
    """Serve until the gateway is told to stop, then stop the stand-ins behind it."""
    standins = [StandInServer(uvicorn.Config(app, host="127.0.0.1", port=p, log_level="warning"))
                for app, p in ((StandIn("demo self-hosted stand-in"), SELF_PORT),
                               (StandIn("demo proprietary stand-in"), THIRD_PARTY_PORT))]
    tasks = [asyncio.create_task(server.serve()) for server in standins]
    try:
        await DrainingServer(uvicorn_config(gateway, ServeOptions(host, port, log_level=log_level))).serve()
    finally:
        for server in standins:
            server.should_exit = True
        await asyncio.gather(*tasks)


class StandInServer(uvicorn.Server):
    """A stand-in's server: it leaves signals to the gateway's, which stops it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _banner(host: str, port: int, path: Path) -> str:
    return f"""\
Switchyard demo: the gateway on http://{host}:{port}/v1 and two DEMO STAND-IN upstreams (not models):
  demo-self-hosted  (hosting: self, eu-west)   on 127.0.0.1:{SELF_PORT}
  demo-proprietary  (hosting: third_party, us) on 127.0.0.1:{THIRD_PARTY_PORT}
Routes: chat (cheapest first), smart (proprietary first), embed. Policy: {path}

  from openai import OpenAI
  client = OpenAI(base_url="http://{host}:{port}/v1", api_key="{DEMO_KEY}")
  r = client.chat.completions.with_raw_response.create(model="smart", messages=[{{"role": "user", "content": "hi"}}])
  print(r.headers["x-switchyard-upstream"], r.parse().choices[0].message.content)

Personal data (try an e-mail address in the prompt) stays on demo-self-hosted even on route 'smart'.
Metrics: http://{host}:{port}/metrics. Ctrl-C stops all three.
"""
