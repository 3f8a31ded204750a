"""gateway.pipeline.deliver: plain answers, passed-on client errors and streams, from real loopback stand-ins."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.asgi import DisconnectWatch, Message
from gateway.delivery.dispatch import Dispatcher, Inflight, Request
from gateway.inbound.openai import ENDPOINTS, OpenAIInbound
from gateway.operations.metrics import Metrics
from gateway.pipeline.deliver import Deliverer, Delivery
from gateway.pipeline.inbound import Call
from gateway.pipeline.record import Record
from gateway.pipeline.runtime import Runtime
from gateway.routing import classify
from gateway.routing.policy.decide import decide
from gateway.state.latency import LatencyTracker
from gateway.state.retry_budget import RetryBudget
from gateway.tools.standin import Fault, StandIn
from gateway.upstreams.http import Pool
from tests.conftest import Loop
from tests.pipeline.policies import policy

BODY = {"model": "chat", "messages": [{"role": "user", "content": "Hello there"}]}


@dataclass
class Sent:
    """What went to the client."""

    messages: list[Message] = field(default_factory=list)

    async def __call__(self, message: Message) -> None:
        self.messages.append(message)

    @property
    def status(self) -> int:
        return int(self.messages[0]["status"])

    @property
    def headers(self) -> dict[bytes, bytes]:
        return dict(self.messages[0]["headers"])

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.messages[1:])


@dataclass
class Rig:
    standins: dict[str, StandIn]
    runtime: Runtime
    deliverer: Deliverer


@pytest.fixture
async def rig(loop: Loop, tmp_path: Path) -> AsyncIterator[Rig]:
    standins = {"primary": StandIn("primary"), "fallback": StandIn("fallback")}
    urls = {name: loop.serve(app).url for name, app in standins.items()}
    pool = Pool()
    metrics = Metrics()
    running = Runtime.build(policy(tmp_path, urls["primary"], urls["fallback"]), pool)
    yield Rig(standins, running, Deliverer(metrics, Dispatcher(metrics, Inflight(), RetryBudget()), LatencyTracker()))
    await pool.close()


async def never() -> Message:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


def delivery(rig: Rig, sent: Sent, record: Record, **extra: Any) -> Delivery:
    body = {**BODY, **extra}
    features = classify.features(rig.runtime.policy, "acme", "chat", body, {})
    decision = decide(rig.runtime.policy, features)
    task = asyncio.current_task()
    assert task is not None
    request = Request("/chat/completions", body, {}, features.stream)
    return Delivery(rig.runtime, OpenAIInbound(), Call(ENDPOINTS["/v1/chat/completions"], body, body), decision,
                    request, sent, record, DisconnectWatch(never, task, 60))


async def test_a_plain_answer_is_relayed_with_what_it_cost(rig: Rig) -> None:
    sent, record = Sent(), Record("r", "h", "chat")
    await rig.deliverer.plain(delivery(rig, sent, record))
    assert (sent.status, record.status, record.upstream) == (200, 200, "primary")
    assert orjson.loads(sent.body)["choices"][0]["message"]["content"].startswith("[primary]")
    assert float(sent.headers[b"x-switchyard-cost-usd"]) == pytest.approx(record.cost)
    assert record.usage.completion_tokens > 0


async def test_an_upstreams_client_error_is_passed_on(rig: Rig) -> None:
    rig.standins["primary"].faults.append(Fault(status=400))
    sent, record = Sent(), Record("r", "h", "chat")
    await rig.deliverer.plain(delivery(rig, sent, record))
    assert (sent.status, record.status, record.upstream) == (400, 400, "primary")
    assert sent.headers[b"content-type"].startswith(b"application/json")
    assert rig.standins["fallback"].seen == []


async def test_a_stream_is_relayed_to_its_end(rig: Rig) -> None:
    sent, record = Sent(), Record("r", "h", "chat")
    await rig.deliverer.stream(delivery(rig, sent, record, stream=True), 0.0)
    assert (sent.status, sent.headers[b"content-type"]) == (200, b"text/event-stream; charset=utf-8")
    assert b"[primary]" in sent.body
    assert sent.body.endswith(b"data: [DONE]\n\n")
    assert (record.outcome, record.upstream) == ("ok", "primary")


async def test_a_stream_cut_that_cannot_continue_ends_in_the_inbounds_failure_event(rig: Rig) -> None:
    rig.standins["primary"].faults.append(Fault(cut_after=2))
    sent, record = Sent(), Record("r", "h", "chat")
    await rig.deliverer.stream(delivery(rig, sent, record, stream=True), 0.0)
    last = sent.messages[-1]
    assert last["more_body"] is False
    error = orjson.loads(last["body"].removeprefix(b"data: "))["error"]
    assert (error["code"], error["type"]) == ("stream_interrupted", "server_error")
    assert b"[DONE]" not in sent.body
    assert record.outcome == "stream_interrupted"
