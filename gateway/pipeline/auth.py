"""Who is asking, and which routes they may use."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.errors import AuthenticationFailed, InvalidRequest, ModelNotFound
from gateway.routing.policy.model import Policy


def authenticate(policy: Policy, key: str, hint: str = "Authorization: Bearer <key>") -> str:
    """The tenant holding key; 401 otherwise (a missing key is told how to send one: hint)."""
    if not key:
        raise AuthenticationFailed(f"missing API key: send '{hint}'")
    found = policy.tenant(key)
    if found is None:
        raise AuthenticationFailed("invalid API key")
    return found[0]


def check_route(policy: Policy, tenant: str, body: Mapping[str, Any]) -> str:
    """The route `model` names, if this tenant may use it; 400 or 404 otherwise."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("'model' is required and must be a string", param="model")
    allowed = policy.routes_for(policy.doc.tenants[tenant])
    if model not in allowed:
        raise ModelNotFound(f"the model '{model}' does not exist or you do not have access to it; "
                            f"available: {', '.join(allowed)}", param="model")
    return model
