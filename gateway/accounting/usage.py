"""Usage -> cost -> metrics, for each request an upstream served."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

import orjson

from gateway.operations.metrics import Metrics
from gateway.routing.policy.decide import Features, completion_estimate
from gateway.routing.policy.model import Policy
from gateway.state.base import MOST, Limits, bounded, to_nano
from gateway.values import value

logger = logging.getLogger("switchyard.accounting")
CAP_FIELD = {"chat": "max_tokens", "completions": "max_tokens", "responses": "max_output_tokens",
             "messages": "max_tokens"}
NUMBERS = (int, float)  # a tuple: `int | float` would build a union object at every call
UNKNOWN_WINDOW = 10_000_000  # tokens a sequence may hold on an upstream that declares no context_window


@value
class Usage:
    """Tokens an upstream reported for one request; the cache parts are tokens of the prompt."""

    prompt_tokens: int = 0  # every prompt token, those read from or written to a prompt cache included
    completion_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0  # of the writes, those cached for an hour (Anthropic's dearer `ttl: 1h`)

    @classmethod
    def of(cls, usage: Any) -> Usage:
        """Read an OpenAI `usage` object, its cached prompt tokens too; anything else counts as no usage."""
        if not isinstance(usage, dict) and not isinstance(usage, Mapping):  # dict first: no ABC check
            return cls()
        prompt = usage.get("prompt_tokens") or usage.get("input_tokens")
        if prompt.__class__ is not int or not 0 < prompt <= MOST:  # the common case checked here, not in a call
            prompt = token_count(prompt)
        completion = usage.get("completion_tokens") or usage.get("output_tokens")
        if completion.__class__ is not int or not 0 < completion <= MOST:
            completion = token_count(completion)
        details = usage.get("prompt_tokens_details") or usage.get("input_tokens_details")  # chat's, Responses'
        if not isinstance(details, dict):
            return cls(prompt, completion)
        written = details.get("cache_creation_tokens") or details.get("cache_write_tokens")  # litellm's, OpenRouter's
        return cls.parted(prompt, completion, token_count(details.get("cached_tokens")), token_count(written))

    @classmethod
    def parted(cls, prompt: int, completion: int, read: int, written: int, written_1h: int = 0) -> Usage:
        """Usage whose prompt holds read and written cache tokens, the parts held within it (writes, the dearer,
        kept first; the one-hour writes within the writes)."""
        if written > prompt:
            written = prompt
        if read > prompt - written:
            read = prompt - written
        return cls(prompt, completion, read, written, written_1h if written_1h <= written else written)

    @classmethod
    def of_body(cls, body: bytes) -> Usage:
        """The usage of a whole JSON response body."""
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            try:  # the standard library reads what orjson refuses, such as a count of 1e400 (as infinity)
                parsed = json.loads(body)
            except (ValueError, RecursionError):  # not JSON, or nested past what either parser follows
                return cls()
        return cls.of(parsed.get("usage") if isinstance(parsed, dict) else None)


def token_count(value: Any) -> int:
    """A reported token count: a positive number (12.0 counts as 12, not as nothing), else 0."""
    if isinstance(value, bool) or not isinstance(value, NUMBERS) or not value > 0:
        return 0
    return int(min(value, MOST))  # a float past every count (1e19, inf) held to the bound every counter has


def most_tokens(policy: Policy, upstream: str, n: int) -> int:
    """The most tokens of either kind a request of n choices could produce on upstream: its window, n times."""
    return (policy.doc.upstreams[upstream].context_window or UNKNOWN_WINDOW) * n


def plausible(usage: Usage, most: int) -> Usage | None:
    """usage clamped to most tokens of each kind (its cache parts within its prompt), or None when it was within
    them."""
    if usage.prompt_tokens <= most and usage.completion_tokens <= most:
        return None
    return Usage.parted(min(usage.prompt_tokens, most), min(usage.completion_tokens, most), usage.cache_read_tokens,
                        usage.cache_write_tokens, usage.cache_write_1h_tokens)


def settle(metrics: Metrics, policy: Policy, tenant: str, upstream: str, usage: Usage,
           n: int = 1) -> tuple[Usage, float]:
    """Record a served request's tokens and cost; return the usage counted (clamped to what the request could
    produce) and its cost in USD."""
    clamped = plausible(usage, most_tokens(policy, upstream, n))
    if clamped is not None:
        logger.warning("upstream %s reported %d prompt and %d completion tokens, more than a request of %d "
                       "choice(s) can produce there; counted as %d and %d", upstream, usage.prompt_tokens,
                       usage.completion_tokens, n, clamped.prompt_tokens, clamped.completion_tokens)
        metrics.count(metrics.usage_clamped, upstream)
        usage = clamped
    cost = cost_of(policy, upstream, usage)
    if usage.prompt_tokens:
        metrics.count(metrics.tokens, tenant, upstream, "prompt", amount=usage.prompt_tokens)
    if usage.completion_tokens:
        metrics.count(metrics.tokens, tenant, upstream, "completion", amount=usage.completion_tokens)
    if usage.cache_read_tokens:
        metrics.count(metrics.cache_tokens, tenant, upstream, "read", amount=usage.cache_read_tokens)
    if usage.cache_write_tokens:
        metrics.count(metrics.cache_tokens, tenant, upstream, "write", amount=usage.cache_write_tokens)
    if cost:
        metrics.count(metrics.cost, tenant, upstream, amount=cost)
    return usage, cost


def format_usd(cost: float) -> bytes:
    """A cost as a header value: plain decimal, ten places, no exponent."""
    return f"{cost:.10f}".encode()


def limits_for(policy: Policy, features: Features, candidates: tuple[str, ...]) -> Limits:
    """What a request must be admitted against: its tenant's rate limits and budgets, and a cost to reserve.

    The reservation is the dearest candidate's estimate (prompt estimate plus n times max_tokens, or the
    route's default_max_tokens that `capped` sends), since a fallback may serve the request; the prompt is priced
    at its dearest prompt price, as all of it may be written to a cache.
    """
    tenant = policy.doc.tenants[features.tenant]
    rate, budget = tenant.rate_limit, tenant.budget
    if rate is None and budget is None:
        return Limits(features.tenant)
    completion = completion_estimate(features, policy.doc.models[features.route])
    budgets = () if budget is None else tuple(
        (window, to_nano(limit)) for window, limit in (("day", budget.usd_per_day), ("month", budget.usd_per_month))
        if limit is not None)
    cost = max(policy.reservation(name, features.prompt_tokens, completion) for name in candidates) if budgets else 0.0
    return Limits(features.tenant, rate.requests_per_minute if rate else None,
                  rate.tokens_per_minute if rate else None, bounded(features.prompt_tokens + completion), budgets,
                  to_nano(cost))


def capped(policy: Policy, features: Features, body: Mapping[str, Any]) -> Mapping[str, Any]:
    """body with the route's default_max_tokens as its cap when the client gave none and the tenant has a budget.

    So the reservation bounds what the answer can cost. `max_tokens` on chat and completions (what every
    OpenAI-compatible server reads, and what litellm translates for other providers), `max_output_tokens`
    on the Responses API; embeddings generate nothing.
    """
    field = CAP_FIELD.get(features.endpoint)
    budget = policy.doc.tenants[features.tenant].budget
    if field is None or features.max_tokens is not None or budget is None:  # a budget holds a limit (checks.py)
        return body
    return {**body, field: policy.doc.models[features.route].default_max_tokens}


def baseline_cost(policy: Policy, route: str, usage: Usage) -> float | None:
    """What usage would have cost at the route's (or the policy's) baseline upstream, if one is named."""
    baseline = policy.doc.models[route].baseline or policy.doc.baseline
    if baseline is None:
        return None
    return cost_of(policy, baseline, usage)


def cost_of(policy: Policy, upstream: str, usage: Usage) -> float:
    """What usage costs at upstream, every part of the prompt at its own price."""
    return policy.cost(upstream, usage.prompt_tokens, usage.completion_tokens, usage.cache_read_tokens,
                       usage.cache_write_tokens, usage.cache_write_1h_tokens)
