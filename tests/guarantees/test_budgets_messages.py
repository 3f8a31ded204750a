"""A tenant's budget holds on the Messages API: what a request may cost is reserved before any upstream sees it,
its tools counted, and one budget covers both APIs; answers whose prompt is all cache writes, at Anthropic's
premium, cannot spend past it either.

The route's one upstream is a fake Anthropic server priced $3 in and $15 out per Mtok; the tenant has a budget.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import pytest

from gateway.routing import classify
from gateway.serving.app import Gateway, Settings
from gateway.tools.standin.messages import MessagesStandIn
from tests.conftest import KEY, Loop, Served, key_hash, settled_spend, upstream_spec, write_policy

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


# --- answers that are all cache writes ------------------------------------------------------------------------

ADMIN_KEY = "sy-admin-test-key-0123456789abcdef"
LONG = [{"role": "user", "content": "x" * 4000}]  # about a thousand prompt tokens, as the gateway estimates them
CAP = 10  # max_tokens, every one of which the answer uses


class AllCacheWrites(MessagesStandIn):
    """A fake Anthropic whose every answer is the dearest its request can get: the whole prompt, as many tokens
    as the gateway estimates, written to the cache, and max_tokens of output."""

    def __init__(self, prompt_tokens: int) -> None:
        super().__init__("writes")
        self.prompt_tokens = prompt_tokens

    def usage(self, body: dict[str, Any], output: int) -> dict[str, int]:
        return {"input_tokens": 0, "output_tokens": body["max_tokens"], "cache_read_input_tokens": 0,
                "cache_creation_input_tokens": self.prompt_tokens}


@pytest.mark.parametrize("stream", [False, True])
def test_answers_that_are_all_cache_writes_cannot_spend_past_the_budget(loop: Loop, tmp_path: Path,
                                                                        stream: bool) -> None:
    """Cache writes cost 1.25 times the input price. Were the prompt reserved at the input price, each answer
    would cost more than its reservation, and this budget (four answers and half a fifth) would admit a fifth that
    spends past it; priced at the dearest prompt price, the reservation is what an answer costs at most."""
    prompt = classify.request_texts("messages", {"model": "chat", "max_tokens": CAP, "messages": LONG}).prompt_tokens()
    each = (prompt * 3.75 + CAP * 15.0) / 1e6  # every prompt token a cache write, every output token used
    at_input_price = (prompt * 3.0 + CAP * 15.0) / 1e6
    budget = 4 * each + (at_input_price + each) / 2
    upstream = AllCacheWrites(prompt)
    cost = {"input_per_mtok": 3.0, "output_per_mtok": 15.0, "cache_write_per_mtok": 3.75}
    spec = upstream_spec(loop.serve(upstream).url, "writes-model", context_window=200_000, cost=cost,
                         capabilities=["messages"])
    path = write_policy(tmp_path, {"writes": spec}, {"chat": {"candidates": ["writes"]}},
                        tenants={"acme": {"keys": [key_hash(KEY)], "budget": {"usd_per_day": budget}}})
    gateway = Gateway(Settings(policy=str(path), admin_key=ADMIN_KEY))
    url = loop.serve(gateway).url
    served = 0
    with anthropic.Anthropic(base_url=url, api_key=KEY, max_retries=0) as client:
        while served < 10:
            try:
                if stream:
                    with client.messages.stream(model="chat", max_tokens=CAP, messages=LONG) as events:  # type: ignore[arg-type]
                        usage = events.get_final_message().usage
                else:
                    usage = client.messages.create(model="chat", max_tokens=CAP, messages=LONG).usage  # type: ignore[arg-type]
            except anthropic.RateLimitError as exc:
                refusal = exc
                break
            assert (usage.input_tokens, usage.cache_creation_input_tokens) == (0, prompt)
            served += 1
    spent = spend(url)
    assert spent <= budget
    overshoot = gateway.metrics.registry.get_sample_value("switchyard_budget_overshoot_usd_total", {"tenant": "acme"})
    assert not overshoot  # no answer cost more than was reserved for it
    assert served == 4  # the fifth may cost more than is left: refused before the upstream saw it
    assert len(upstream.seen) == 4
    assert spent == pytest.approx(4 * each, abs=1e-9)
    assert f"may cost up to ${each:.6f}" in refusal.message  # what is reserved is what an answer can cost
    written = gateway.metrics.registry.get_sample_value(
        "switchyard_cache_tokens_total", {"tenant": "acme", "upstream": "writes", "kind": "write"})
    assert written == 4 * prompt


def spend(url: str) -> float:
    """The tenant's spend today, once nothing is reserved any more."""
    return float(settled_spend(url, ADMIN_KEY)["spend_usd"])
