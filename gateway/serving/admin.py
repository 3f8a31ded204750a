"""Admin reads: spend, budget left and savings per tenant and upstream, behind an admin key."""

from __future__ import annotations

import hmac
import time
from collections.abc import Mapping
from typing import Any

from gateway.errors import AuthenticationFailed, InvalidRequest, NotFound, PermissionDenied, StateUnavailable
from gateway.routing.policy.model import Policy, hash_key
from gateway.state.base import NANO, WINDOWS, StateError, resets_at
from gateway.state.ledger import Ledger


class Admin:
    """Answers /admin/spend for holders of the admin key (SWITCHYARD_ADMIN_KEY, or a hash in admin.keys)."""

    def __init__(self, ledger: Ledger, admin_key: str | None) -> None:
        self.ledger = ledger
        self.admin_key = admin_key

    def authorize(self, policy: Policy, headers: Mapping[str, str]) -> None:
        """401 without a key, 403 for a tenant's key, nothing for an admin's."""
        scheme, _, key = headers.get("authorization", "").partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise AuthenticationFailed("missing admin key: send 'Authorization: Bearer <admin key>'")
        if self.admin_key and hmac.compare_digest(key.encode(), self.admin_key.encode()):
            return
        if hash_key(key) in policy.doc.admin.keys:
            return
        if policy.tenant(key) is not None:
            raise PermissionDenied("this is a tenant key; the admin endpoints need an admin key")
        raise AuthenticationFailed("invalid admin key")

    async def spend(self, policy: Policy, headers: Mapping[str, str], query: Mapping[str, str]) -> dict[str, Any]:
        """The spend report for one tenant, or every tenant, in the day or month window."""
        self.authorize(policy, headers)
        window = query.get("window", "day")
        if window not in WINDOWS:
            raise InvalidRequest("window must be 'day' or 'month'", param="window")
        tenant = query.get("tenant")
        if tenant is not None and tenant not in policy.doc.tenants:
            raise NotFound(f"no tenant '{tenant}' in the policy")
        names = [tenant] if tenant else list(policy.doc.tenants)
        now = time.time()
        try:
            reports = [await self._report(policy, name, window, now) for name in names]
        except StateError as exc:
            raise StateUnavailable(f"spend cannot be read: {exc}") from None
        return {"window": window, "tenants": reports}

    async def _report(self, policy: Policy, tenant: str, window: str, now: float) -> dict[str, Any]:
        spend = await self.ledger.spend(tenant, window, now)
        budget = policy.doc.tenants[tenant].budget
        limit = None if budget is None else (budget.usd_per_day if window == "day" else budget.usd_per_month)
        return {
            "tenant": tenant, "period": spend.period, "spend_usd": spend.spent / NANO,
            "reserved_usd": spend.reserved / NANO, "savings_usd": spend.savings / NANO, "budget_usd": limit,
            "remaining_usd": None if limit is None else limit - (spend.spent + spend.reserved) / NANO,
            "resets_at": resets_at(window, now),
            "upstreams": {name: {"cost_usd": row["cost"] / NANO, "tokens": row["tokens"], "requests": row["requests"]}
                          for name, row in sorted(spend.upstreams.items())},
        }
