"""The gateway's exceptions; each inbound format (gateway.inbound) renders them in its own wire shape.

    GatewayError                      an answer to the client: status, type, code, param
    ├── InvalidRequest                400 invalid_request_error
    ├── AuthenticationFailed          401 invalid_api_key
    ├── PermissionDenied              403
    ├── ModelNotFound                 404 model_not_found
    ├── NotFound, MethodNotAllowed    404 not_found, 405 method_not_allowed
    ├── PayloadTooLarge               413 request_too_large
    ├── StateUnavailable              503 state_unavailable (Redis away, state.on_unavailable: fail_closed)
    ├── RateLimited                   429 rate_limited, of `requests` or `tokens`
    ├── NoCandidate                   an empty allowed set (403 / 400 / 429 / 503, by its code); a spent
    │                                 budget is 429 budget_exhausted
    └── UpstreamFailed                502 / 503 / 504 after every candidate failed

    UpstreamError                     one attempt at one upstream went wrong (never shown as is)
    ├── UpstreamUnavailable           refused, reset or closed before response headers
    │   ├── UpstreamCut               reset or closed after its answer began (mid-body, mid-stream)
    │   └── UpstreamIncomplete        a stream that ended cleanly without finishing, or before any event
    ├── UpstreamTimeout               no answer within the time allowed
    │   └── DeadlinePassed            the request's own deadline ran out during the try
    ├── UpstreamSilent                the connection stayed silent, then closed
    ├── Saturated                     the upstream is at its max_concurrency in this process
    ├── CircuitOpen                   the upstream's circuit is open (or its half-open probe is out)
    ├── UpstreamRedirect              the upstream answered 3xx: never followed
    ├── UpstreamTooLarge              an answer, an error body or one event over its limit (upstreams.NAME.limits)
    ├── UpstreamMalformed             an answer that cannot be read (an encoding not asked for, a broken gzip)
    └── UpstreamStatus                the upstream answered with an error status

    PolicyError                       a policy that does not load; one message per problem
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar


class GatewayError(Exception):
    """An error the client is told about: status, type (client's or server's fault), code, param, headers."""

    status = 500
    type = "server_error"
    code: str | None = "internal_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None,
                 status: int | None = None, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.headers = tuple(headers)
        self.reason = self.code  # the gateway's own name for what happened (audit, metrics); an inbound may word
        # code its own way (OpenAI calls a spent budget insufficient_quota)


class InvalidRequest(GatewayError):
    """The request body or its fields are not what the API accepts."""

    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class AuthenticationFailed(GatewayError):
    """No key, or a key no tenant holds."""

    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class PermissionDenied(GatewayError):
    """The key is valid but may not do this."""

    status = 403
    type = "invalid_request_error"
    code = "permission_denied"


class ModelNotFound(GatewayError):
    """The model names no route this tenant may use."""

    status = 404
    type = "invalid_request_error"
    code = "model_not_found"


class NotFound(GatewayError):
    """No such endpoint."""

    status = 404
    type = "invalid_request_error"
    code = "not_found"


class MethodNotAllowed(GatewayError):
    """The endpoint exists but not for this method."""

    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class PayloadTooLarge(GatewayError):
    """The body is over the configured limit."""

    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class RateLimited(GatewayError):
    """A tenant's rate limit refused the request; kind says which ran out: `requests` or `tokens`."""

    status = 429
    type = "rate_limit_error"
    code = "rate_limited"

    def __init__(self, message: str, kind: str, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
        super().__init__(message, headers=headers)
        self.kind = kind


class NoCandidate(GatewayError):
    """The policy left no upstream that may serve this request."""

    STATUS: ClassVar[dict[str, int]] = {
        "residency_unavailable": 403, "capability_unavailable": 400, "context_length_exceeded": 400,
        "budget_exhausted": 429, "no_healthy_upstream": 503, "policy_denied": 403}
    type = "invalid_request_error"

    def __init__(self, code: str, message: str, excluded: Sequence[tuple[str, str]] = (),
                 headers: Sequence[tuple[bytes, bytes]] = (), param: str | None = None) -> None:
        super().__init__(message, param=param, code=code, status=self.STATUS[code], headers=headers)
        self.excluded = tuple(excluded)
        if self.status >= 500:
            self.type = "server_error"


class UpstreamFailed(GatewayError):
    """Every candidate failed; the message is sanitized and names no secret."""

    status = 502
    type = "server_error"
    code = "upstream_error"


class StateUnavailable(GatewayError):
    """Shared state is unreachable and the policy says to fail closed."""

    status = 503
    type = "server_error"
    code = "state_unavailable"


class UpstreamError(Exception):
    """One attempt at an upstream failed; `reason` is a short label fit for a metric."""

    reason = "error"
    retryable = True

    def __init__(self, upstream: str, detail: str = "") -> None:
        super().__init__(f"{upstream}: {self.reason}{': ' + detail if detail else ''}")
        self.upstream = upstream


class UpstreamUnavailable(UpstreamError):
    """The upstream refused, reset or closed the connection before answering."""

    reason = "connect"


class UpstreamCut(UpstreamUnavailable):
    """The connection broke after the upstream's answer began: a reset or close in the middle of its body."""

    reason = "cut"


class UpstreamIncomplete(UpstreamUnavailable):
    """The stream ended cleanly but unfinished: no finish_reason or [DONE], or not one event."""

    reason = "incomplete"


class UpstreamTimeout(UpstreamError):
    """The upstream did not answer in time."""

    reason = "timeout"
    retryable = False


class DeadlinePassed(UpstreamTimeout):
    """The request's own deadline ran out during the try: says nothing about the upstream's health."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream, "deadline passed")


class UpstreamSilent(UpstreamError):
    """The connection stayed silent, then closed: not asked again, like a timeout."""

    reason = "silent_close"
    retryable = False


RETRIED_STATUSES = frozenset({408, 429, 500, 502, 503, 504, 529})  # asked again on the same upstream


class UpstreamStatus(UpstreamError):
    """The upstream answered with an error status; its body (OpenAI-shaped JSON, redacted) is kept for pass-through."""

    def __init__(self, upstream: str, status: int, body: bytes, content_type: bytes) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.reason = f"http_{status}"
        self.retryable = status in RETRIED_STATUSES
        self.retry_after: str | None = None
        self.kind: str | None = None
        super().__init__(upstream)


class UpstreamRedirect(UpstreamError):
    """The upstream answered with a redirect: never followed, since its Location is in no policy."""

    reason = "redirect"
    retryable = False

    def __init__(self, upstream: str, status: int) -> None:
        super().__init__(upstream, f"answered {status}; redirects are never followed")
        self.status = status


class UpstreamTooLarge(UpstreamError):
    """An answer, its decompressed form, an error body or one stream event went past its limit."""

    reason = "body_too_large"
    retryable = False
    WHAT: ClassVar[dict[str, str]] = {"body": "the answer", "decompressed_body": "the decompressed answer",
                                      "error_body": "the error body", "event": "one stream event"}

    def __init__(self, upstream: str, what: str, limit: int) -> None:
        self.reason = f"{what}_too_large"  # body, decompressed_body, error_body or event: a bounded label set
        super().__init__(upstream, f"{self.WHAT[what]} is over the limit of {limit} bytes")
        self.limit = limit


class UpstreamMalformed(UpstreamError):
    """The answer cannot be read: an encoding the gateway did not ask for, or a broken compressed body."""

    reason = "malformed"
    retryable = False


class Saturated(UpstreamError):
    """The upstream is at its max_concurrency in this process."""

    reason = "saturated"
    retryable = False


class CircuitOpen(UpstreamError):
    """The upstream's circuit opened, or its one half-open probe is taken, since the decision."""

    reason = "circuit_open"
    retryable = False


class PolicyError(Exception):
    """A policy that does not load; `problems` holds one line per problem, each naming its place."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)
