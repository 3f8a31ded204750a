"""gateway.accounting.refusals: the 429s of a tenant's limits, as the OpenAI inbound words them."""

from __future__ import annotations

import datetime as dt

import orjson
import pytest

from gateway.accounting.refusals import budget_exhausted, rate_limited
from gateway.inbound.openai import error_body
from gateway.state.base import NANO, Admission, Limits

NOON = dt.datetime(2026, 11, 25, 12, 0, 0, tzinfo=dt.UTC).timestamp()


def test_a_spent_budget_is_insufficient_quota_keeping_the_gateways_reason() -> None:
    refused = Admission(False, limit="day", retry_after_s=12 * 3600, remaining={"day": 0})
    error = budget_exhausted("acme", refused, Limits("acme", cost=NANO // 10), NOON)
    body = orjson.loads(error_body(error))["error"]
    assert (error.status, body["code"], body["type"], error.reason) == (
        429, "insufficient_quota", "insufficient_quota", "budget_exhausted")
    assert body["message"] == ("the daily budget of tenant 'acme' is spent ($0.000000 left); it resets at "
                               "2026-11-26T00:00:00Z")
    assert dict(error.headers)[b"retry-after"] == b"43200"


def test_a_budget_too_small_for_the_reservation_says_what_the_request_may_cost() -> None:
    refused = Admission(False, limit="month", retry_after_s=3600, remaining={"month": NANO // 100})
    error = budget_exhausted("acme", refused, Limits("acme", cost=NANO // 10), NOON)
    message = orjson.loads(error_body(error))["error"]["message"]
    assert message.startswith("this request may cost up to $0.100000; $0.010000 is left of the monthly budget of "
                              "tenant 'acme'")
    assert "spent" not in message


@pytest.mark.parametrize(("limit", "kind"), [("requests_per_minute", "requests"), ("tokens_per_minute", "tokens")])
def test_a_rate_limit_is_rate_limit_exceeded_typed_by_what_ran_out(limit: str, kind: str) -> None:
    error = rate_limited("acme", Admission(False, limit=limit, retry_after_s=0.2))
    body = orjson.loads(error_body(error))["error"]
    assert (error.status, body["code"], body["type"], error.reason) == (429, "rate_limit_exceeded", kind,
                                                                         "rate_limited")
    assert dict(error.headers)[b"retry-after"] == b"1"  # whole seconds, at least one
