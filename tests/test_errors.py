"""The gateway's exceptions: the status, type and code each tells the client, and the labels upstream errors carry."""

from __future__ import annotations

import pytest

from gateway.errors import (
    AuthenticationFailed,
    CircuitOpen,
    DeadlinePassed,
    GatewayError,
    InvalidRequest,
    MethodNotAllowed,
    ModelNotFound,
    NoCandidate,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    PolicyError,
    RateLimited,
    Saturated,
    StateUnavailable,
    UpstreamCut,
    UpstreamError,
    UpstreamFailed,
    UpstreamIncomplete,
    UpstreamMalformed,
    UpstreamRedirect,
    UpstreamSilent,
    UpstreamStatus,
    UpstreamTimeout,
    UpstreamTooLarge,
    UpstreamUnavailable,
)


@pytest.mark.parametrize(("kind", "status", "type_", "code"), [
    (GatewayError, 500, "server_error", "internal_error"),
    (InvalidRequest, 400, "invalid_request_error", "invalid_request"),
    (AuthenticationFailed, 401, "invalid_request_error", "invalid_api_key"),
    (PermissionDenied, 403, "invalid_request_error", "permission_denied"),
    (ModelNotFound, 404, "invalid_request_error", "model_not_found"),
    (NotFound, 404, "invalid_request_error", "not_found"),
    (MethodNotAllowed, 405, "invalid_request_error", "method_not_allowed"),
    (PayloadTooLarge, 413, "invalid_request_error", "request_too_large"),
    (UpstreamFailed, 502, "server_error", "upstream_error"),
    (StateUnavailable, 503, "server_error", "state_unavailable"),
])
def test_each_client_error_tells_its_status_type_and_code(kind: type[GatewayError], status: int, type_: str,
                                                         code: str) -> None:
    error = kind("what went wrong")
    assert (error.status, error.type, error.code, error.reason) == (status, type_, code, code)
    assert (error.message, str(error), error.param, error.headers) == ("what went wrong", "what went wrong", None, ())


def test_an_error_may_override_its_code_and_status_and_carry_headers() -> None:
    error = InvalidRequest("bad", param="messages", code="too_many", status=422, headers=[(b"x-a", b"1")])
    assert (error.status, error.code, error.reason, error.param, error.headers) == (
        422, "too_many", "too_many", "messages", ((b"x-a", b"1"),))
    assert InvalidRequest("plain").code == "invalid_request"  # the override stays on that one instance


def test_a_rate_limit_says_which_limit_ran_out() -> None:
    error = RateLimited("slow down", "tokens", headers=[(b"retry-after", b"2")])
    assert (error.status, error.type, error.code, error.kind) == (429, "rate_limit_error", "rate_limited", "tokens")
    assert error.headers == ((b"retry-after", b"2"),)


@pytest.mark.parametrize(("code", "status", "type_"), [
    ("residency_unavailable", 403, "invalid_request_error"), ("capability_unavailable", 400, "invalid_request_error"),
    ("context_length_exceeded", 400, "invalid_request_error"), ("budget_exhausted", 429, "invalid_request_error"),
    ("policy_denied", 403, "invalid_request_error"), ("no_healthy_upstream", 503, "server_error"),
])
def test_no_candidate_takes_its_status_from_its_code_and_is_the_servers_fault_only_at_5xx(code: str, status: int,
                                                                                          type_: str) -> None:
    error = NoCandidate(code, "none left", excluded=[("a", "circuit_open")])
    assert (error.status, error.type, error.code, error.excluded) == (status, type_, code, (("a", "circuit_open"),))
    assert NoCandidate.type == "invalid_request_error"


def test_no_candidate_refuses_a_code_it_does_not_know() -> None:
    with pytest.raises(KeyError):
        NoCandidate("nonsense", "x")


@pytest.mark.parametrize(("kind", "reason", "retryable", "family"), [
    (UpstreamUnavailable, "connect", True, UpstreamError),
    (UpstreamCut, "cut", True, UpstreamUnavailable),
    (UpstreamIncomplete, "incomplete", True, UpstreamUnavailable),
    (UpstreamTimeout, "timeout", False, UpstreamError),
    (UpstreamSilent, "silent_close", False, UpstreamError),
    (UpstreamMalformed, "malformed", False, UpstreamError),
    (Saturated, "saturated", False, UpstreamError),
    (CircuitOpen, "circuit_open", False, UpstreamError),
])
def test_upstream_errors_carry_a_metric_label_and_whether_to_ask_again(kind: type[UpstreamError], reason: str,
                                                                       retryable: bool, family: type) -> None:
    error = kind("primary", "details")
    assert isinstance(error, family)
    assert (error.upstream, error.reason, error.retryable) == ("primary", reason, retryable)
    assert str(error) == f"primary: {reason}: details"
    assert str(kind("primary")) == f"primary: {reason}"


def test_a_passed_deadline_is_a_timeout_that_says_so() -> None:
    error = DeadlinePassed("primary")
    assert isinstance(error, UpstreamTimeout)
    assert (str(error), error.retryable) == ("primary: timeout: deadline passed", False)


@pytest.mark.parametrize(("status", "retryable"), [(408, True), (429, True), (500, True), (503, True), (529, True),
                                                   (400, False), (401, False), (404, False), (501, False)])
def test_an_error_status_is_asked_again_only_when_it_may_pass(status: int, retryable: bool) -> None:
    error = UpstreamStatus("primary", status, b'{"error": {}}', b"application/json")
    assert (error.reason, error.retryable, error.status) == (f"http_{status}", retryable, status)
    assert (error.body, error.content_type, error.retry_after, error.kind) == (
        b'{"error": {}}', b"application/json", None, None)
    assert str(error) == f"primary: http_{status}"


def test_a_redirect_is_never_followed_and_names_its_status() -> None:
    error = UpstreamRedirect("primary", 302)
    assert (error.status, error.retryable, error.reason) == (302, False, "redirect")
    assert str(error) == "primary: redirect: answered 302; redirects are never followed"


@pytest.mark.parametrize(("what", "words"), [("body", "the answer"), ("decompressed_body", "the decompressed answer"),
                                             ("error_body", "the error body"), ("event", "one stream event")])
def test_too_large_names_what_was_over_which_limit(what: str, words: str) -> None:
    error = UpstreamTooLarge("primary", what, 1024)
    assert (error.reason, error.limit, error.retryable) == (f"{what}_too_large", 1024, False)
    assert str(error) == f"primary: {what}_too_large: {words} is over the limit of 1024 bytes"


def test_a_policy_error_keeps_one_line_per_problem() -> None:
    error = PolicyError(["a: bad", "b: worse"])
    assert error.problems == ["a: bad", "b: worse"]
    assert str(error) == "a: bad\nb: worse"
