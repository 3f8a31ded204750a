"""The gateway's errors in Anthropic's shape, with its types and statuses, and Retry-After where it belongs."""

from __future__ import annotations

import orjson
import pytest

from gateway.errors import (
    AuthenticationFailed,
    GatewayError,
    InvalidRequest,
    ModelNotFound,
    NoCandidate,
    PayloadTooLarge,
    RateLimited,
    UpstreamFailed,
    UpstreamStatus,
)
from gateway.inbound.messages import errors


@pytest.mark.parametrize(("error", "status", "kind"), [
    (InvalidRequest("bad"), 400, "invalid_request_error"),
    (AuthenticationFailed("who"), 401, "authentication_error"),
    (NoCandidate("residency_unavailable", "nowhere"), 403, "permission_error"),
    (ModelNotFound("no such route"), 404, "not_found_error"),
    (PayloadTooLarge("big"), 413, "request_too_large"),
    (RateLimited("slow down", "requests", [(b"retry-after", b"7")]), 429, "rate_limit_error"),
    (NoCandidate("budget_exhausted", "spent"), 429, "rate_limit_error"),
    (UpstreamFailed("all failed"), 502, "api_error"),
    (UpstreamFailed("slow", status=504, code="upstream_timeout"), 504, "timeout_error"),
    (NoCandidate("no_healthy_upstream", "down"), 529, "overloaded_error"),
    (GatewayError("shutting down", status=503, code="shutting_down"), 529, "overloaded_error"),
])
def test_gateway_errors(error: GatewayError, status: int, kind: str) -> None:
    got_status, body, headers = errors.from_gateway(error)
    assert got_status == status
    assert orjson.loads(body) == {"type": "error", "error": {"type": kind, "message": error.message}}
    retry = [v for k, v in headers if k == b"retry-after"]
    assert retry == ([b"7"] if isinstance(error, RateLimited) else [b"1"] if status in (429, 529) else [])


def test_an_anthropic_upstream_error_passes_through() -> None:
    raw = b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'
    failed = UpstreamStatus("claude", 529, raw, b"application/json")
    failed.retry_after = "3"
    assert errors.from_upstream(failed) == (529, raw, [(b"retry-after", b"3")])


def test_an_openai_shaped_upstream_error_is_reworded() -> None:
    raw = orjson.dumps({"error": {"message": "max_tokens too large", "type": "BadRequestError", "code": 400}})
    status, body, headers = errors.from_upstream(UpstreamStatus("vllm", 400, raw, b"application/json"))
    assert (status, headers) == (400, [])
    assert orjson.loads(body) == {"type": "error", "error": {"type": "invalid_request_error",
                                                             "message": "max_tokens too large"}}


def test_a_messages_shaped_error_of_another_type_is_retyped() -> None:
    raw = b'{"type":"error","error":{"type":"BadRequestError","message":"max_tokens is too large"}}'
    status, body, _ = errors.from_upstream(UpstreamStatus("vllm", 400, raw, b"application/json"))
    assert status == 400
    assert orjson.loads(body) == {"type": "error", "error": {"type": "invalid_request_error",
                                                             "message": "max_tokens is too large"}}


def test_an_unreadable_upstream_error_names_its_status() -> None:
    status, body, _ = errors.from_upstream(UpstreamStatus("vllm", 422, b"<html>", b"text/html"))
    assert status == 422
    assert orjson.loads(body)["error"]["message"] == "upstream 'vllm' answered 422"


def test_error_event() -> None:
    event = errors.error_event("api_error", "cut")
    assert event.startswith(b"event: error\ndata: ")
    assert orjson.loads(event.split(b"data: ")[1]) == {"type": "error", "error": {"type": "api_error",
                                                                                  "message": "cut"}}
