"""A Messages stream delivered by the gateway, with the anthropic client: the first stream to open wins, a client
error is passed on, and a cut stream is billed for the text that went out."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest

from gateway.inbound.messages.deliver import INTERRUPTED
from gateway.serving.app import Gateway, Settings
from gateway.tools.standin.messages import INPUT_TOKENS, MessagesFault, MessagesStandIn
from tests.conftest import KEY, Loop, upstream_spec, wait_for, write_policy

HELLO: list[Any] = [{"role": "user", "content": "Say hello."}]


@dataclass
class Stack:
    """A gateway over two upstreams that speak Messages, and a client for it."""

    loop: Loop
    gateway: Gateway
    url: str
    first: MessagesStandIn
    second: MessagesStandIn
    client: anthropic.Anthropic

    def metric(self, name: str, **labels: str) -> float:
        self.loop.settled()
        return self.gateway.metrics.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
def stack(loop: Loop, tmp_path: Path) -> Iterator[Stack]:
    first, second = MessagesStandIn("first"), MessagesStandIn("second")
    upstreams = {name: upstream_spec(loop.serve(app).url, f"{name}-model", capabilities=["messages"])
                 for name, app in (("first", first), ("second", second))}
    path = write_policy(tmp_path, upstreams, {"chat": {"candidates": ["first", "second"]}})
    gateway = Gateway(Settings(policy=str(path)))
    url = loop.serve(gateway).url
    with anthropic.Anthropic(base_url=url, api_key=KEY, max_retries=0) as client:
        yield Stack(loop, gateway, url, first, second, client)


def test_a_stream_that_fails_to_open_gives_way_to_the_next_candidate(stack: Stack) -> None:
    stack.first.faults.extend([MessagesFault(status=529)] * 2)
    raw = stack.client.messages.with_raw_response.create(model="chat", max_tokens=64, messages=HELLO, stream=True)
    kinds = [event.type for event in raw.parse()]
    assert raw.headers["x-switchyard-upstream"] == "second"
    assert (kinds[0], kinds[-1], kinds.count("message_start")) == ("message_start", "message_stop", 1)
    assert len(stack.first.seen) == 2  # asked again, then given up on, before any byte went out


def test_a_client_error_is_passed_on_in_anthropics_shape_without_trying_another(stack: Stack) -> None:
    stack.first.faults.append(MessagesFault(status=400))
    body = {"model": "chat", "max_tokens": 64, "messages": HELLO, "stream": True}
    response = httpx.post(stack.url + "/v1/messages", headers={"x-api-key": KEY}, json=body, timeout=30)
    assert response.status_code == 400
    assert response.json() == {"type": "error", "error": {"type": "invalid_request_error",
                                                          "message": "first: error 400"}}
    assert response.headers["x-switchyard-upstream"] == "first"
    assert stack.second.seen == []


def test_a_cut_stream_ends_with_one_error_event_and_is_billed_for_the_text_that_went_out(stack: Stack) -> None:
    stack.first.faults.append(MessagesFault(cut_after=3, pause_s=0.2))
    body = {"model": "chat", "max_tokens": 64, "messages": HELLO, "stream": True}
    response = httpx.post(stack.url + "/v1/messages", headers={"x-api-key": KEY}, json=body, timeout=30)
    assert response.status_code == 200
    assert response.text.count("event: error") == 1
    assert INTERRUPTED in response.text
    assert "message_stop" not in response.text
    assert '"text":"[first] "' in response.text
    labels = {"tenant": "acme", "upstream": "first"}
    wait_for(lambda: stack.metric("switchyard_tokens_total", **labels, type="prompt") == INPUT_TOKENS,
             what="the prompt billed as the stream reported it")
    completion = stack.metric("switchyard_tokens_total", **labels, type="completion")
    assert completion > 1  # message_start said 1: the text that went out counts for more
    assert stack.metric("switchyard_stream_failures_total", upstream="first", reason="cut",
                        outcome="error_event") == 1
