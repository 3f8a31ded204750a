"""Usage -> cost -> metrics, for each request an upstream served."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.metrics import Metrics
from gateway.policy.decide import Features, completion_estimate
from gateway.policy.model import Policy
from gateway.state.base import Limits, to_nano


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


def limits_for(policy: Policy, features: Features, candidates: tuple[str, ...]) -> Limits:
    """What a request must be admitted against: its tenant's rate limits and budgets, and a cost to reserve.

    The reservation is the dearest candidate's estimate (prompt estimate plus max_tokens), since a
    fallback may serve the request.
    """
    tenant = policy.doc.tenants[features.tenant]
    rate, budget = tenant.rate_limit, tenant.budget
    if rate is None and budget is None:
        return Limits(features.tenant)
    completion = completion_estimate(features, policy.doc.models[features.route])
    budgets = () if budget is None else tuple(
        (window, to_nano(limit)) for window, limit in (("day", budget.usd_per_day), ("month", budget.usd_per_month))
        if limit is not None)
    cost = max(policy.cost(name, features.prompt_tokens, completion) for name in candidates) if budgets else 0.0
    return Limits(features.tenant, rate.requests_per_minute if rate else None,
                  rate.tokens_per_minute if rate else None, features.prompt_tokens + completion, budgets,
                  to_nano(cost))


def baseline_cost(policy: Policy, route: str, usage: Usage) -> float | None:
    """What usage would have cost at the route's (or the policy's) baseline upstream, if one is named."""
    baseline = policy.doc.models[route].baseline or policy.doc.baseline
    if baseline is None:
        return None
    return policy.cost(baseline, usage.prompt_tokens, usage.completion_tokens)
