"""The refusals a tenant's limits give, worded for people: a spent or too small budget, a rate limit.

Each carries Retry-After in whole seconds. How a refusal is typed on the wire (OpenAI's `insufficient_quota` and
`rate_limit_exceeded`, its `x-ratelimit-*` headers) is the inbound format's to say (gateway.inbound).
"""

from __future__ import annotations

import datetime as dt
import math

from gateway.errors import NoCandidate, RateLimited
from gateway.state.base import NANO, Admission, Limits


def budget_exhausted(tenant: str, admission: Admission, limits: Limits, now: float) -> NoCandidate:
    """429 budget_exhausted naming the budget, what is left of it, when it resets, and whether it is spent or only
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
    """429 rate_limited naming the limit, of `requests` or `tokens`, with Retry-After."""
    wait = ceil_seconds(admission.retry_after_s)
    kind = "requests" if admission.limit == "requests_per_minute" else "tokens"
    return RateLimited(f"tenant '{tenant}' is over its {admission.limit.replace('_', ' ')}; retry after {wait} s",
                       kind, headers=[(b"retry-after", str(wait).encode())])


def ceil_seconds(seconds: float) -> int:
    """A Retry-After value: whole seconds, at least one."""
    return max(1, math.ceil(seconds))
