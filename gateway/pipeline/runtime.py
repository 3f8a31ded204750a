"""A loaded policy together with the upstream clients built for it: what one request runs against."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp

from gateway.routing.policy.model import Policy
from gateway.upstreams.base import Client
from gateway.upstreams.openai import OpenAIUpstream


@dataclass(frozen=True, slots=True)
class Runtime:
    """An immutable pairing of policy and clients; a reload swaps in a new one whole."""

    policy: Policy
    upstreams: Mapping[str, Client]
    session: aiohttp.ClientSession | None = None  # the one upstream clients share, for inbounds that build their own

    @classmethod
    def build(cls, policy: Policy, session: aiohttp.ClientSession) -> Runtime:
        """Create a client for every upstream the policy names; litellm is imported only for translated kinds."""
        resilience = policy.doc.resilience
        clients: dict[str, Client] = {}
        for name, spec in policy.doc.upstreams.items():
            if spec.kind == "openai":
                clients[name] = OpenAIUpstream(name, spec, session, resilience)
            else:
                from gateway.upstreams.litellm_adapter import LitellmUpstream

                clients[name] = LitellmUpstream(name, spec, resilience)
        return cls(policy, clients, session)
