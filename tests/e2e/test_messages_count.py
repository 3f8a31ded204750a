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
from tests.conftest import KEY, OTHER_KEY, Loop, key_hash, wait_for
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


# --- counted and audited ---------------------------------------------------------------------------------------------


def audit_records(path: Path, endpoint: str) -> list[dict[str, Any]]:
    """The audit records of endpoint's requests written so far."""
    lines = path.read_bytes().splitlines() if path.exists() else []
    return [record for record in map(orjson.loads, lines) if record.get("endpoint") == endpoint]


def test_a_forwarded_count_is_counted_and_audited_with_the_upstream_it_reached(loop: Loop, tmp_path: Path) -> None:
    """The audit trail shows every place a prompt went: a forwarded count names its upstream and region."""
    audit = tmp_path / "audit.jsonl"
    stack = start(loop, tmp_path, settings={"audit": (str(audit),)}, models=ROUTES, upstreams={"gone": GONE})
    raw = count(stack, "claude-first")
    wait_for(lambda: len(audit_records(audit, "count_tokens")) == 1, what="the count's audit record")
    [record] = audit_records(audit, "count_tokens")
    assert (record["request_id"], record["route"], record["upstream"], record["region"], record["status"],
            record["outcome"]) == (raw.headers["x-request-id"], "claude-first", "claude", "us", 200, "ok")
    assert record["candidates"] == ["claude", "chatty"]
    assert [(a["upstream"], a["outcome"]) for a in record["attempts"]] == [("claude", "ok")]
    assert record["cost_usd"] == 0
    assert metric(stack, "switchyard_requests_total", tenant="acme", endpoint="count_tokens", route="claude-first",
                  upstream="claude", status="200") == 1
    assert raw.headers["x-switchyard-region"] == "us"
    stack.client().close()


def test_an_estimated_count_is_audited_as_reaching_no_upstream(loop: Loop, tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    stack = start(loop, tmp_path, settings={"audit": (str(audit),)}, models=ROUTES, upstreams={"gone": GONE})
    count(stack, "chatty-first")
    wait_for(lambda: len(audit_records(audit, "count_tokens")) == 1, what="the count's audit record")
    [record] = audit_records(audit, "count_tokens")
    assert (record["upstream"], record["outcome"], record["attempts"]) == ("none", "estimated", [])
    assert metric(stack, "switchyard_requests_total", tenant="acme", endpoint="count_tokens", route="chatty-first",
                  upstream="none", status="200") == 1
    stack.client().close()


def test_a_failed_forward_is_audited_with_its_attempt_and_the_estimate(loop: Loop, tmp_path: Path) -> None:
    """The prompt reached the upstream even though its count was not used: the attempt is in the record."""
    audit = tmp_path / "audit.jsonl"
    stack = start(loop, tmp_path, settings={"audit": (str(audit),)}, models=ROUTES, upstreams={"gone": GONE})
    stack.claude.faults.append(MessagesFault(status=500))
    assert count(stack, "claude-first").parse().input_tokens == ESTIMATE
    wait_for(lambda: len(audit_records(audit, "count_tokens")) == 1, what="the count's audit record")
    [record] = audit_records(audit, "count_tokens")
    assert (record["upstream"], record["outcome"]) == ("none", "estimated")
    assert [(a["upstream"], a["region"], a["outcome"]) for a in record["attempts"]] == [
        ("claude", "us", "count_tokens_http_500")]
    stack.client().close()


def test_a_refused_count_is_counted_with_its_status(loop: Loop, tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    stack = start(loop, tmp_path, settings={"audit": (str(audit),)}, models=ROUTES, upstreams={"gone": GONE})
    with pytest.raises(anthropic.NotFoundError):
        count(stack, "no-such-route")
    with pytest.raises(anthropic.AuthenticationError):
        stack.client(key="sk-wrong").messages.count_tokens(model="claude-first", messages=HELLO)
    assert metric(stack, "switchyard_requests_total", tenant="acme", endpoint="count_tokens", route="unknown",
                  upstream="none", status="404") == 1
    assert metric(stack, "switchyard_requests_total", tenant="-", endpoint="count_tokens", route="unknown",
                  upstream="none", status="401") == 1
    stack.client().close()
