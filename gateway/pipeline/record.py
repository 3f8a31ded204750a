"""The record of one request as it goes through the pipeline: its labels, its status, and the headers it earns."""

from __future__ import annotations

import datetime as dt

from gateway.accounting.usage import Usage
from gateway.asgi import Headers
from gateway.delivery.dispatch import Dispatch
from gateway.state.base import Admission, Backend
from gateway.upstreams.base import Client

NOT_ADMITTED = Admission(False)


class Record:
    """What each stage learned of one request; the metrics, the audit trail and the answer's headers read it."""

    def __init__(self, request_id: str, policy_hash: str, endpoint: str) -> None:
        self.request_id = request_id
        self.policy_hash = policy_hash
        self.endpoint = endpoint
        self.dispatch = Dispatch()
        self.route = "unknown"
        self.upstream = "none"
        self.status = 500
        self.tenant = "-"
        self.data_class = "-"
        self.region = "-"
        self.rule = "-"
        self.prompt_tokens = 0
        self.n = 1
        self.rate_headers: Headers = []
        self.cost = 0.0
        self.usage = Usage()
        self.backend: Backend | None = None
        self.admission = NOT_ADMITTED
        self.outcome = "ok"
        self.savings = 0.0
        self.candidates: tuple[str, ...] = ()
        self.excluded: tuple[tuple[str, str], ...] = ()
        self.spilled_from: str | None = None
        self.capacity: dict[str, dict[str, object]] = {}

    def charge(self, usage: Usage, cost: float) -> None:
        """Add what one upstream's part of the answer used and cost."""
        self.usage = Usage(self.usage.prompt_tokens + usage.prompt_tokens,
                           self.usage.completion_tokens + usage.completion_tokens,
                           self.usage.cache_read_tokens + usage.cache_read_tokens,
                           self.usage.cache_write_tokens + usage.cache_write_tokens,
                           self.usage.cache_write_1h_tokens + usage.cache_write_1h_tokens)
        self.cost += cost

    def served_by(self, upstream: Client) -> None:
        """Note the upstream whose answer the client gets."""
        self.upstream = upstream.name
        self.region = upstream.spec.region or "-"

    def tell(self) -> Headers:
        """The headers every answer to this request carries: its id, the policy, who served it and why."""
        headers = [(b"x-request-id", self.request_id.encode("latin-1")),
                   (b"x-switchyard-policy", self.policy_hash.encode())]
        if self.upstream != "none":
            headers += [(b"x-switchyard-upstream", self.upstream.encode()),
                        (b"x-switchyard-region", self.region.encode())]
        if self.data_class != "-":
            headers.append((b"x-switchyard-data-class", self.data_class.encode()))
        if self.route != "unknown":
            headers.append((b"x-switchyard-rule", self.rule.encode()))
        if self.spilled_from is not None:
            headers.append((b"x-switchyard-spilled-from", self.spilled_from.encode()))
        return headers + self.rate_headers if self.rate_headers else headers

    def audit_fields(self, elapsed: float) -> dict[str, object]:
        """The audit record of this request: the decision and every attempt, never content or keys."""
        fields = self._fields(elapsed)
        if self.capacity:
            fields["capacity"] = self.capacity
            fields["spilled_from"] = self.spilled_from
        return fields

    def _fields(self, elapsed: float) -> dict[str, object]:
        return {
            "time": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"), "request_id": self.request_id,
            "endpoint": self.endpoint, "tenant": self.tenant, "route": self.route, "data_class": self.data_class,
            "policy": self.policy_hash, "rule": self.rule, "candidates": list(self.candidates),
            "excluded": [{"upstream": u, "reason": r} for u, r in self.excluded],
            "attempts": [a.fields() for a in self.dispatch.attempts], "upstream": self.upstream,
            "region": self.region, "status": self.status, "outcome": self._outcome(),
            "tokens": {"prompt": self.usage.prompt_tokens, "completion": self.usage.completion_tokens,
                       "cache_read": self.usage.cache_read_tokens, "cache_write": self.usage.cache_write_tokens,
                       "cache_write_1h": self.usage.cache_write_1h_tokens},
            "cost_usd": round(self.cost, 10), "savings_usd": round(self.savings, 10), "ms": round(elapsed * 1000, 3),
        }

    def _outcome(self) -> str:
        """The outcome; an error answer with no outcome of its own is named by its status."""
        return self.outcome if self.status < 400 or self.outcome != "ok" else f"error:http_{self.status}"
