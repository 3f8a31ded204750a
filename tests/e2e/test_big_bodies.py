"""Bodies of 10 MiB are classified off the event loop: /healthz is answered while they are in flight."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import httpx

from gateway.asgi import Receive, Scope, Send
from gateway.serving.app import DEFAULT_MAX_BODY, Gateway, Settings
from gateway.tools.standin import StandIn
from tests.conftest import Loop, upstream_spec, wait_for, write_policy

ATTACKERS = 2
DEADLINE_S = 60.0  # two busy cores, two 10 MiB bodies parsed and read by every detector
PROSE = "the quarterly review covers reliability, cost and hiring in plain words. "
CLASSES = {"public": {}, "personal": {"hosting": ["self"]}}
DETECT = {"detectors": [{"detect": ["email", "phone", "credit_card", "iban", "national_id"], "class": "personal"}]}


class Held:
    """A stand-in upstream that takes requests in at once but answers none until released."""

    def __init__(self, label: str) -> None:
        self.standin = StandIn(label)
        self.arrived = 0
        self.go = asyncio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.arrived += 1  # the gateway sends a request on only once it has classified it
            await self.go.wait()
        await self.standin(scope, receive, send)


def big_prompt() -> str:
    """Prose up to just under the body limit, with an address at its very end."""
    tail = " Send the summary to jane.doe@example.com."
    return PROSE * ((DEFAULT_MAX_BODY - 64 * 1024) // len(PROSE)) + tail


def test_healthz_is_answered_while_10_mib_bodies_are_in_flight(loop: Loop, tmp_path: Path) -> None:
    held, cloud = Held("self"), StandIn("cloud")
    upstreams = {"self": upstream_spec(loop.serve(held).url, model="self-model", hosting="self"),
                 "cloud": upstream_spec(loop.serve(cloud).url, model="cloud-model", hosting="third_party")}
    path = write_policy(tmp_path, upstreams, {"chat": {"candidates": ["cloud", "self"]}}, data_classes=CLASSES,
                        classify=DETECT)
    served = loop.serve(Gateway(Settings(policy=str(path))))
    client = loop.client(served.url + "/v1", timeout=DEADLINE_S)
    messages = [{"role": "user", "content": big_prompt()}]
    finished: list[str] = []  # in the order things completed

    def attack() -> None:
        answer = client.chat.completions.create(model="chat", messages=messages, max_tokens=5)  # type: ignore[arg-type]
        finished.append(str(answer.choices[0].message.content))

    attackers = [threading.Thread(target=attack) for _ in range(ATTACKERS)]
    for thread in attackers:
        thread.start()
    try:
        wait_for(lambda: held.arrived >= 1, timeout=DEADLINE_S, what="a 10 MiB body classified and sent on")
        health = httpx.get(served.url + "/healthz", timeout=DEADLINE_S)
        finished.append("probe")
    finally:
        loop.loop.call_soon_threadsafe(held.go.set)
        for thread in attackers:
            thread.join(timeout=DEADLINE_S)
    assert health.status_code == 200
    assert finished[0] == "probe"  # answered while every big request was still in flight
    assert len(finished) == ATTACKERS + 1
    assert all(answer.startswith("[self]") for answer in finished[1:])  # the address at the end was read
    assert not cloud.seen
