"""The answers a tenant's limits give: 429s in OpenAI's vocabulary, and the x-ratelimit-* headers.

A rate limit refuses with `rate_limit_exceeded` typed `requests` or `tokens`; a budget with `insufficient_quota`,
saying whether it is spent or only too small for what this request may cost. Every answer of a rate-limited
tenant, once admitted or refused, carries OpenAI's `x-ratelimit-limit-*`, `-remaining-*` and `-reset-*` headers.
"""

from __future__ import annotations

import datetime as dt
import math

from gateway.errors import NoCandidate, RateLimited
from gateway.serving.asgi import Headers
from gateway.state.base import NANO, Admission, Limits
from gateway.state.memory import ceil_seconds


def budget_exhausted(tenant: str, admission: Admission, limits: Limits, now: float) -> NoCandidate:
    """429 insufficient_quota naming the budget, what is left of it, when it resets, and whether it is spent or only
    too small for what this request may cost."""
    reset = dt.datetime.fromtimestamp(now + admission.retry_after_s, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    window = {"day": "daily", "month": "monthly"}[admission.limit]
    left = admission.remaining.get(admission.limit, 0)
    if left > 0:
        message = (f"this request may cost up to ${limits.cost / NANO:.6f}; ${left / NANO:.6f} is left of the {window} "
                   f"budget of tenant '{tenant}', which resets at {reset}")
    else:
        message = f"the {window} budget of tenant '{tenant}' is spent ($0.000000 left); it resets at {reset}"
    return NoCandidate("budget_exhausted", message,
                       headers=[(b"retry-after", str(ceil_seconds(admission.retry_after_s)).encode())])


def rate_limited(tenant: str, admission: Admission) -> RateLimited:
    """429 rate_limit_exceeded naming the limit, with Retry-After."""
    wait = ceil_seconds(admission.retry_after_s)
    kind = "requests" if admission.limit == "requests_per_minute" else "tokens"
    return RateLimited(f"tenant '{tenant}' is over its {admission.limit.replace('_', ' ')}; retry after {wait} s",
                       kind, headers=[(b"retry-after", str(wait).encode())])


def rate_headers(limits: Limits, admission: Admission) -> Headers:
    """OpenAI's x-ratelimit-* headers for the tenant's rate limits, as this request left them."""
    headers: Headers = []
    for kind, limit in (("requests", limits.requests_per_minute), ("tokens", limits.tokens_per_minute)):
        rate = admission.rates.get(kind)
        if limit is None or rate is None:
            continue
        headers += [(b"x-ratelimit-limit-" + kind.encode(), str(limit).encode()),
                    (b"x-ratelimit-remaining-" + kind.encode(), str(rate.remaining).encode()),
                    (b"x-ratelimit-reset-" + kind.encode(), duration(rate.reset_s).encode())]
    return headers


def duration(seconds: float) -> str:
    """A reset time as OpenAI writes it: '20ms', '1s', '6m0s'."""
    ms = max(0, math.ceil(seconds * 1000))
    if ms < 1000:
        return f"{ms}ms"
    minutes, rest = divmod(ms, 60_000)
    text = f"{rest / 1000:.3f}".rstrip("0").rstrip(".") + "s"
    return f"{minutes}m{text}" if minutes else text
