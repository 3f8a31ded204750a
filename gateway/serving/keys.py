"""Keys the gateway must know of itself: the public development key it warns of, provider keys it redacts."""

from __future__ import annotations

import logging

from gateway.routing.policy.model import Policy

PUBLIC_KEYS = ("sk-sy-dev-only-replace-me-0123456789abcdef",)  # printed in the README and the shipped policy
logger = logging.getLogger("switchyard.app")


def warn_of_public_keys(policy: Policy) -> None:
    """Log loudly when the policy lets in a key anyone can read in the README."""
    for key in PUBLIC_KEYS:
        found = policy.tenant(key)
        if found is not None:
            logger.warning("THE POLICY ACCEPTS THE PUBLIC DEVELOPMENT KEY printed in the README (tenant '%s'): anyone "
                           "who can reach this gateway can use it. Replace it: `switchyard keys new --tenant NAME`",
                           found[0])


def provider_keys(policy: Policy) -> list[str]:
    """Every provider key in the policy, for the log redactor."""
    return [u.api_key.get_secret_value() for u in policy.doc.upstreams.values() if u.api_key is not None]
