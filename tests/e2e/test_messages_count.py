"""count_tokens end to end: the official anthropic SDK against the gateway, the upstreams of tests/e2e/test_messages.py.

A route whose first candidate is `kind: anthropic` (the fake Anthropic server `claude`, which counts by a rule of
its own) answers that upstream's count, as the same request gets from it directly; any other route, and a
failing upstream, the gateway's estimate.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import orjson
import pytest

from gateway.inbound.messages.count import input_tokens
from gateway.tools.standin.messages import MessagesFault
from tests.conftest import KEY, OTHER_KEY, Loop, key_hash
from tests.e2e.test_messages import HELLO, UPSTREAM_KEY, Messages, metric, start

SYSTEM = "Be brief."
BODY = {"messages": HELLO, "system": SYSTEM}
ESTIMATE = input_tokens({"model": "any", **BODY})
ROUTES = {"claude-first": {"candidates": ["claude", "chatty"]}, "chatty-first": {"candidates": ["chatty", "claude"]},
          "gone": {"candidates": ["gone"]}}
GONE = {"kind": "anthropic", "base_url": "http://127.0.0.1:9/v1", "model": "gone-model", "api_key": UPSTREAM_KEY,
        "hosting": "third_party", "cost": {"input_per_mtok": 3.0, "output_per_mtok": 15.0}}  # port 9: nothing listens


@pytest.fixture
def stack(loop: Loop, tmp_path: Path) -> Iterator[Messages]:
    made = start(loop, tmp_path, models=ROUTES, upstreams={"gone": GONE})
    yield made
    for client in made.clients:
        client.close()


def count(stack: Messages, model: str, **extra: Any) -> Any:
    """The gateway's raw count_tokens answer for BODY on model."""
    return stack.client().messages.with_raw_response.count_tokens(model=model, messages=HELLO, system=SYSTEM,
                                                                  extra_body=extra or None)


@pytest.mark.parametrize("route", ["claude-sonnet-4-5", "claude-first"])
def test_an_anthropic_route_answers_its_upstreams_own_count(stack: Messages, route: str) -> None:
    raw = count(stack, route)
    straight = stack.direct().messages.count_tokens(model="claude-upstream-model", messages=HELLO, system=SYSTEM)
    assert raw.parse().input_tokens == straight.input_tokens != ESTIMATE
    assert raw.headers["x-switchyard-upstream"] == "claude"
    [seen] = stack.claude.seen[:1]
    assert (seen.path, seen.body) == ("/v1/messages/count_tokens", {"model": "claude-upstream-model", **BODY})
    assert seen.headers["x-api-key"] == UPSTREAM_KEY
    assert seen.headers["anthropic-version"] == stack.claude.seen[1].headers["anthropic-version"]  # the SDK's own
    assert "authorization" not in seen.headers
    assert KEY not in orjson.dumps(seen.headers).decode()
    assert seen.headers["x-request-id"] == raw.headers["x-request-id"]
    assert stack.chatty.seen == []


def test_whatever_else_the_upstream_answers_is_passed_on(stack: Messages) -> None:
    managed = {"edits": [{"type": "clear_tool_uses_20250919"}]}
    raw = count(stack, "claude-sonnet-4-5", context_management=managed)
    straight = stack.direct().messages.with_raw_response.count_tokens(
        model="claude-upstream-model", messages=HELLO, system=SYSTEM, extra_body={"context_management": managed})
    assert orjson.loads(raw.http_response.content) == orjson.loads(straight.http_response.content)
    assert "context_management" in orjson.loads(raw.http_response.content)


@pytest.mark.parametrize("route", ["translated", "native", "chatty-first"])
def test_a_route_whose_first_choice_is_not_anthropic_gets_the_estimate(stack: Messages, route: str) -> None:
    """chatty-first: claude is allowed, but would see the request only if chatty failed, so it is not asked."""
    raw = count(stack, route)
    assert raw.parse().input_tokens == ESTIMATE
    assert "x-switchyard-upstream" not in raw.headers
    assert (stack.claude.seen, stack.native.seen, stack.chatty.seen) == ([], [], [])


FAILURES = {
    "a 500": (MessagesFault(status=500), "count_tokens_http_500"),
    "a 529": (MessagesFault(status=529), "count_tokens_http_529"),
    "a 429": (MessagesFault(status=429, retry_after="30"), "count_tokens_http_429"),
    "a 401 (the gateway's key refused)": (MessagesFault(status=401), "count_tokens_http_401"),
    "HTML": (MessagesFault(body=b"<html>oops</html>"), "count_tokens_malformed"),
    "a message": (MessagesFault(body=b'{"type":"message","content":[]}'), "count_tokens_malformed"),
    "a count that is a string": (MessagesFault(body=b'{"input_tokens":"12"}'), "count_tokens_malformed"),
    "a negative count": (MessagesFault(body=b'{"input_tokens":-1}'), "count_tokens_malformed"),
    "a count past 64 bits": (MessagesFault(body=b'{"input_tokens":' + b"9" * 30 + b"}"), "count_tokens_malformed"),
}


@pytest.mark.parametrize("name", FAILURES)
def test_a_failing_upstream_falls_back_to_the_estimate_and_is_counted(stack: Messages, name: str) -> None:
    fault, reason = FAILURES[name]
    stack.claude.faults.append(fault)
    raw = count(stack, "claude-sonnet-4-5")
    assert (raw.status_code, raw.parse().input_tokens) == (200, ESTIMATE)
    assert "x-switchyard-upstream" not in raw.headers
    assert len(stack.claude.seen) == 1
    assert metric(stack, "switchyard_upstream_errors_total", upstream="claude", reason=reason) == 1
    assert count(stack, "claude-sonnet-4-5").parse().input_tokens != ESTIMATE  # the next is the upstream's again


def test_an_unreachable_upstream_falls_back_to_the_estimate(stack: Messages) -> None:
    assert count(stack, "gone").parse().input_tokens == ESTIMATE
    assert metric(stack, "switchyard_upstream_errors_total", upstream="gone", reason="count_tokens_connect") == 1


def test_a_timeout_falls_back_to_the_estimate(loop: Loop, tmp_path: Path) -> None:
    quick = {"backoff_ms": [1, 5], "attempts_per_upstream": 1, "per_try_timeout_s": 0.5, "ttft_timeout_s": 0.5,
             "deadline_s": 30}
    stack = start(loop, tmp_path, resilience=quick)
    stack.claude.faults.append(MessagesFault(delay_s=3))
    assert count(stack, "claude-sonnet-4-5").parse().input_tokens == ESTIMATE
    assert metric(stack, "switchyard_upstream_errors_total", upstream="claude", reason="count_tokens_timeout") == 1


def test_the_upstreams_refusal_of_the_body_is_passed_on_as_anthropics_error(stack: Messages) -> None:
    stack.claude.faults.append(MessagesFault(status=400))
    with pytest.raises(anthropic.BadRequestError) as caught:
        count(stack, "claude-sonnet-4-5")
    assert caught.value.body == {"type": "error", "error": {"type": "invalid_request_error",
                                                            "message": "claude: error 400"}}
    assert metric(stack, "switchyard_upstream_errors_total", upstream="claude", reason="count_tokens_http_400") == 1


def test_counting_spends_no_rate_limit_and_no_budget(loop: Loop, tmp_path: Path) -> None:
    """One request a minute and a budget of one cent: ten counts, forwarded and estimated, leave both untouched."""
    limits = {"rate_limit": {"requests_per_minute": 1}, "budget": {"usd_per_day": 0.01}}
    stack = start(loop, tmp_path, tenants={"acme": {"keys": [key_hash(KEY)], **limits},
                                           "limited": {"keys": [key_hash(OTHER_KEY)]}})
    for route in ["claude-sonnet-4-5", "translated"] * 5:
        assert count(stack, route).status_code == 200
    assert len(stack.claude.seen) == 5
    raw = stack.client().messages.with_raw_response.create(model="translated", max_tokens=8, messages=HELLO)
    assert raw.headers["anthropic-ratelimit-requests-remaining"] == "0"  # the first request of the minute
    with pytest.raises(anthropic.RateLimitError):
        stack.client().messages.create(model="translated", max_tokens=8, messages=HELLO)
    assert metric(stack, "switchyard_budget_remaining_usd", tenant="acme", window="day") > 0.0099
