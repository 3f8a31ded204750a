"""What an upstream client is built from: where it sends, with what key, within which timeouts and limits.

The serving layer makes these from the policy (gateway/pipeline/runtime.py); an adapter knows its wire format
and this, never the policy's schema.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import SecretStr

MIB = 1 << 20


@dataclass(frozen=True, slots=True)
class Limits:
    """How much of one answer is read; past a limit the attempt fails, so memory stays bounded."""

    body_bytes: int = 64 * MIB  # an answer as it comes off the wire, a stream's included
    decompressed_bytes: int = 64 * MIB  # the same answer once gzip or deflate is undone
    error_body_bytes: int = 64 << 10  # of an error answer; the rest is never read
    sse_event_bytes: int = 4 * MIB  # one stream event, up to its blank line


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds to connect, for a whole plain answer (or a stream's opening), and between a stream's reads."""

    connect_s: float = 5
    per_try_s: float = 30
    stream_idle_s: float = 15


@dataclass(frozen=True, slots=True)
class UpstreamSpec:
    """One upstream as its client sees it, with what the dispatcher asks of it (region, window, concurrency)."""

    model: str
    kind: str = "openai"
    base_url: str | None = None
    api_key: SecretStr | None = None
    forward_headers: frozenset[str] = frozenset()
    limits: Limits = field(default_factory=Limits)
    timeouts: Timeouts = field(default_factory=Timeouts)
    region: str | None = None
    hosting: str | None = None  # 'self' for the operator's own servers
    context_window: int | None = None
    max_concurrency: int | None = None
    capabilities: frozenset[str] = frozenset()

    @property
    def key(self) -> str | None:
        """The API key in clear, for the request that carries it."""
        return self.api_key.get_secret_value() if self.api_key is not None else None
