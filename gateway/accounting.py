"""Usage -> cost -> metrics, for each request an upstream served."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.metrics import Metrics
from gateway.policy.model import Policy


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens an upstream reported for one request."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    @classmethod
    def of(cls, usage: Any) -> Usage:
        """Read an OpenAI `usage` object; anything else counts as no usage."""
        if not isinstance(usage, Mapping):
            return cls()
        return cls(_count(usage.get("prompt_tokens") or usage.get("input_tokens")),
                   _count(usage.get("completion_tokens") or usage.get("output_tokens")))

    @classmethod
    def of_body(cls, body: bytes) -> Usage:
        """The usage of a whole JSON response body."""
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            return cls()
        return cls.of(parsed.get("usage") if isinstance(parsed, dict) else None)


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def settle(metrics: Metrics, policy: Policy, tenant: str, upstream: str, usage: Usage) -> float:
    """Record a served request's tokens and cost; return the cost in USD."""
    cost = policy.cost(upstream, usage.prompt_tokens, usage.completion_tokens)
    if usage.prompt_tokens:
        metrics.count(metrics.tokens, upstream, "prompt", amount=usage.prompt_tokens)
    if usage.completion_tokens:
        metrics.count(metrics.tokens, upstream, "completion", amount=usage.completion_tokens)
    if cost:
        metrics.count(metrics.cost, tenant, upstream, amount=cost)
    return cost


def format_usd(cost: float) -> bytes:
    """A cost as a header value: plain decimal, ten places, no exponent."""
    return f"{cost:.10f}".encode()
