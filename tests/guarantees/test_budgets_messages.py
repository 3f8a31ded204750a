"""A tenant's budget holds on the Messages API: what a request may cost is reserved before any upstream sees it,
its tools counted, and one budget covers both APIs.

The route's one upstream is a fake Anthropic server priced $3 in and $15 out per Mtok; the tenant has a budget.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import anthropic
import pytest

from gateway.serving.app import Gateway, Settings
from gateway.tools.standin.messages import MessagesStandIn
from tests.conftest import KEY, Loop, Served, key_hash, upstream_spec, write_policy

BUDGET_USD = 0.05
HELLO = [{"role": "user", "content": "Hi"}]


@dataclass
class Rig:
    served: Served
    upstream: MessagesStandIn
    client: anthropic.Anthropic


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    loop = Loop()
    upstream = MessagesStandIn("native")
    spec = upstream_spec(loop.serve(upstream).url, "native-model", context_window=2_000_000,
                         cost={"input_per_mtok": 3.0, "output_per_mtok": 15.0},
                         capabilities=["tools", "json", "vision", "messages"])
    tenants = {"acme": {"keys": [key_hash(KEY)], "budget": {"usd_per_day": BUDGET_USD}}}
    path = write_policy(tmp_path_factory.mktemp("budgets-messages"), {"native": spec},
                        {"chat": {"candidates": ["native"]}}, tenants=tenants)
    served = loop.serve(Gateway(Settings(policy=str(path))))
    client = anthropic.Anthropic(base_url=served.url, api_key=KEY, max_retries=0)
    yield Rig(served, upstream, client)
    client.close()
    loop.close()


def refused(rig: Rig, **body: Any) -> anthropic.RateLimitError:
    before = len(rig.upstream.seen)
    with pytest.raises(anthropic.RateLimitError) as caught:
        rig.client.messages.create(model="chat", timeout=30, **body)  # a timeout: the SDK allows any max_tokens
    assert len(rig.upstream.seen) == before  # refused before any upstream saw it
    assert caught.value.response.headers["retry-after"]
    return caught.value


@pytest.mark.parametrize("max_tokens", [10_000, 1_900_000])
def test_a_max_tokens_the_budget_cannot_pay_for_is_refused(rig: Rig, max_tokens: int) -> None:
    """$15/Mtok: 10 000 output tokens may cost $0.15, three times the budget."""
    error = refused(rig, max_tokens=max_tokens, messages=HELLO)
    assert "budget" in error.message


@pytest.mark.parametrize("max_tokens", [2**31, 2**63 - 1])
def test_a_max_tokens_past_every_window_is_a_400_before_any_upstream(rig: Rig, max_tokens: int) -> None:
    before = len(rig.upstream.seen)
    with pytest.raises(anthropic.BadRequestError) as caught:
        rig.client.messages.create(model="chat", max_tokens=max_tokens, messages=HELLO, timeout=30)
    assert caught.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert len(rig.upstream.seen) == before


def test_tool_definitions_are_counted_in_what_is_reserved(rig: Rig) -> None:
    """A small prompt with 20 000 input tokens of tool descriptions ($0.06) is more than the budget."""
    tools = [{"name": f"tool{i}", "description": "d" * 8_000, "input_schema": {"type": "object"}} for i in range(10)]
    counted = rig.client.messages.count_tokens(model="chat", messages=HELLO, tools=tools).input_tokens  # type: ignore[arg-type]
    assert counted >= 20_000
    refused(rig, max_tokens=8, messages=HELLO, tools=tools)  # type: ignore[arg-type]
    assert rig.client.messages.create(model="chat", max_tokens=8, messages=HELLO).content  # the plain one fits
