"""A loaded policy together with the upstream clients built for it: what one request runs against."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp

from gateway.policy.model import Policy
from gateway.upstreams.openai import OpenAIUpstream


@dataclass(frozen=True, slots=True)
class Runtime:
    """An immutable pairing of policy and clients; a reload swaps in a new one whole."""

    policy: Policy
    upstreams: Mapping[str, OpenAIUpstream]

    @classmethod
    def build(cls, policy: Policy, session: aiohttp.ClientSession) -> Runtime:
        """Create a client for every upstream the policy names."""
        resilience = policy.doc.resilience
        clients = {name: OpenAIUpstream(name, spec, session, resilience) for name, spec in policy.doc.upstreams.items()}
        return cls(policy, clients)
