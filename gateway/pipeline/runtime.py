"""A loaded policy together with the upstream clients built for it: what one request runs against."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass

from gateway.routing.policy.model import Policy
from gateway.routing.policy.schema import Resilience, Upstream
from gateway.upstreams.base import Client
from gateway.upstreams.http import Pool
from gateway.upstreams.openai import OpenAIUpstream
from gateway.upstreams.spec import Limits, Timeouts, UpstreamSpec


@dataclass(frozen=True, slots=True)
class Runtime:
    """An immutable pairing of policy and clients; a reload swaps in a new one whole."""

    policy: Policy
    upstreams: Mapping[str, Client]
    pool: Pool | None = None  # the connections upstream clients share, for inbounds that build their own

    @classmethod
    def build(cls, policy: Policy, pool: Pool) -> Runtime:
        """Create a client for every upstream the policy names; litellm is imported only for translated kinds."""
        resilience = policy.doc.resilience
        clients: dict[str, Client] = {}
        for name, upstream in policy.doc.upstreams.items():
            spec = client_spec(upstream, resilience)
            if spec.kind == "openai":
                clients[name] = OpenAIUpstream(name, spec, pool)
            else:
                from gateway.upstreams.litellm_adapter import LitellmUpstream

                clients[name] = LitellmUpstream(name, spec)
        return cls(policy, clients, pool)

    async def aclose(self) -> None:
        """Close every client's own connections, each once nothing it sent is still open."""
        # one client failing to close does not keep the others open; its connections are being dropped anyway
        await asyncio.gather(*(client.aclose() for client in self.upstreams.values()), return_exceptions=True)


def client_spec(upstream: Upstream, resilience: Resilience) -> UpstreamSpec:
    """What a client is built from: the policy's upstream, with the policy-wide timeouts."""
    limits = upstream.limits
    return UpstreamSpec(
        model=upstream.model, kind=upstream.kind, base_url=upstream.base_url, api_key=upstream.api_key,
        forward_headers=upstream.forward_headers,
        limits=Limits(limits.body_bytes, limits.decompressed_bytes, limits.error_body_bytes, limits.sse_event_bytes),
        timeouts=Timeouts(resilience.connect_timeout_s, resilience.per_try_timeout_s, resilience.stream_idle_timeout_s),
        region=upstream.region, hosting=upstream.hosting, context_window=upstream.context_window,
        max_concurrency=upstream.max_concurrency,
        capabilities=frozenset(upstream.capabilities))
