"""The gateway's errors in Anthropic's shape: `{"type": "error", "error": {"type", "message"}}` and its statuses.

Anthropic answers an overloaded service with 529 `overloaded_error`, so the gateway's own 503s (every upstream
saturated or unhealthy, shutting down) go out as 529; each 429 and 529 carries a Retry-After.
"""

from __future__ import annotations

import orjson

from gateway.errors import GatewayError, UpstreamStatus
from gateway.upstreams import error_kinds

OVERLOADED = 529
TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error", 403: "permission_error",
         404: "not_found_error", 405: "invalid_request_error", 413: "request_too_large", 422: "invalid_request_error",
         429: "rate_limit_error", 500: "api_error", 504: "timeout_error", OVERLOADED: "overloaded_error"}
KNOWN_TYPES = frozenset({*TYPES.values(), "billing_error"})
RETRY_AFTER_S = b"1"  # for a 429 or 529 whose cause names no time of its own
Headers = list[tuple[bytes, bytes]]


def error_type(status: int) -> str:
    """Anthropic's error type for a status."""
    found = TYPES.get(status)
    if found is not None:
        return found
    return "invalid_request_error" if status < 500 else "api_error"


def body(kind: str, message: str) -> bytes:
    """An error body in Anthropic's shape."""
    return orjson.dumps({"type": "error", "error": {"type": kind, "message": message}})


def status_of(status: int) -> int:
    """The status Anthropic would answer for one of the gateway's: an unavailable service is overloaded."""
    return OVERLOADED if status == 503 else status


def from_gateway(error: GatewayError) -> tuple[int, bytes, Headers]:
    """The status, body and headers of one of the gateway's errors, as Anthropic's API says them."""
    status = status_of(error.status)
    headers = [(k, v) for k, v in error.headers if k.lower() != b"content-type"]
    return status, body(error_type(status), error.message), with_retry_after(status, headers)


def from_upstream(error: UpstreamStatus) -> tuple[int, bytes, Headers]:
    """An upstream's error answer: Anthropic's own passed through, an OpenAI-shaped one reworded in its shape."""
    headers: Headers = [(b"retry-after", error.retry_after.encode("latin-1"))] if error.retry_after else []
    if is_anthropic(error.body):  # Anthropic's own, or a server's that takes its shape but not always its types
        return error.status, error.body, with_retry_after(error.status, headers)
    found = error_kinds.parse(error.body)
    message = found.get("message") if found is not None else None
    if not isinstance(message, str) or not message:
        message = f"upstream '{error.upstream}' answered {error.status}"
    status = status_of(error.status)
    return status, body(error_type(status), message), with_retry_after(status, headers)


def is_anthropic(raw: bytes) -> bool:
    """Whether an error body is in Anthropic's shape with one of its types (vLLM's says `BadRequestError`)."""
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return False
    inner = parsed.get("error") if isinstance(parsed, dict) and parsed.get("type") == "error" else None
    return isinstance(inner, dict) and inner.get("type") in KNOWN_TYPES


def with_retry_after(status: int, headers: Headers) -> Headers:
    """headers, with a Retry-After added to a 429 or 529 that has none."""
    if status not in (429, OVERLOADED) or any(k.lower() == b"retry-after" for k, _ in headers):
        return headers
    return [*headers, (b"retry-after", RETRY_AFTER_S)]


def error_event(kind: str, message: str) -> bytes:
    """A stream's in-band failure: Anthropic's `error` event."""
    return b"event: error\ndata: " + body(kind, message) + b"\n\n"
