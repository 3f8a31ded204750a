"""The loaded policy: the validated document plus the indexes the request path reads."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

from gateway.routing import detectors
from gateway.routing.policy.schema import Document, Tenant

KEY_PREFIX = "sk-sy-"
Price = tuple[float, float, float, float, float]  # USD per token: prompt, completion, cache read, write, 1-hour write


class Catalog(Protocol):
    """What the policy may ask of the translation layer: which upstream kinds exist, and list prices."""

    def knows(self, kind: str) -> bool:
        """Whether kind names an upstream kind this installation can speak."""

    def price(self, kind: str, model: str) -> Price | None:
        """USD per prompt, completion, cache-read, cache-write and one-hour cache-write token from a price map, or
        None."""


class OpenAIOnly:
    """The catalog without translation: only `kind: openai`, no price map."""

    def knows(self, kind: str) -> bool:
        return kind == "openai"

    def price(self, kind: str, model: str) -> Price | None:
        return None


def hash_key(key: str) -> str:
    """The stored form of a gateway key: "sha256:" + hex SHA-256."""
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class ClassDetector:
    """Detectors whose hit raises a request to data_class."""

    data_class: str
    rank: int
    detectors: tuple[detectors.Detector, ...]


@dataclass(frozen=True, slots=True)
class Policy:
    """An immutable, validated policy and its look-up tables."""

    doc: Document
    hash: str
    source: str
    tenant_by_key: Mapping[str, str]
    class_rank: Mapping[str, int]
    price: Mapping[str, Price]
    class_detectors: tuple[ClassDetector, ...]
    price_source: Mapping[str, str]
    smallest_window: Mapping[str, int | None]  # by route: the smallest context window its candidates declare
    known_keys: dict[str, tuple[str, Tenant]] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def build(cls, doc: Document, digest: str, source: str, prices: Mapping[str, Price]) -> Policy:
        """Index a validated document; prices fill in upstreams whose cost the policy leaves out."""
        by_key = {key: name for name, tenant in doc.tenants.items() for key in tenant.keys}
        rank = {name: i for i, name in enumerate(doc.data_classes)}
        price = {name: upstream.cost.per_token() if upstream.cost else prices[name]
                 for name, upstream in doc.upstreams.items()}
        origin = {name: "policy" if upstream.cost else "litellm price map" for name, upstream in doc.upstreams.items()}
        windows = {name: min((w for w in (doc.upstreams[u].context_window for u in route.candidates) if w is not None),
                             default=None) for name, route in doc.models.items()}
        return cls(doc, digest, source, MappingProxyType(by_key), MappingProxyType(rank), MappingProxyType(price),
                   _class_detectors(doc, rank), MappingProxyType(origin), MappingProxyType(windows))

    def tenant(self, key: str) -> tuple[str, Tenant] | None:
        """The tenant holding this raw key, or None; keys already seen skip the hash (only valid ones are kept)."""
        found = self.known_keys.get(key)
        if found is not None:
            return found
        name = self.tenant_by_key.get(hash_key(key))
        if name is None:
            return None
        found = self.known_keys[key] = (name, self.doc.tenants[name])
        return found

    def routes_for(self, tenant: Tenant) -> tuple[str, ...]:
        """The routes a tenant may use, in policy order."""
        if tenant.models is None:
            return tuple(self.doc.models)
        return tuple(name for name in self.doc.models if name in tenant.models)

    def cost(self, upstream: str, prompt_tokens: int, completion_tokens: int, cache_read: int = 0,
             cache_write: int = 0, cache_write_1h: int = 0) -> float:
        """What a request of these token counts costs at upstream, in USD; cache_read and cache_write are tokens of
        prompt_tokens (at most all of them together), cache_write_1h those of cache_write cached for an hour."""
        per_in, per_out, per_read, per_write, per_write_1h = self.price[upstream]
        return ((prompt_tokens - cache_read - cache_write) * per_in + cache_read * per_read
                + (cache_write - cache_write_1h) * per_write + cache_write_1h * per_write_1h
                + completion_tokens * per_out)

    def reservation(self, upstream: str, prompt_tokens: int, completion_tokens: int) -> float:
        """The most a request of these token counts can cost at upstream: every prompt token at the dearest of the
        prompt, cache-read and cache-write prices."""
        per_in, per_out, per_read, per_write, per_write_1h = self.price[upstream]
        return prompt_tokens * max(per_in, per_read, per_write, per_write_1h) + completion_tokens * per_out


def _class_detectors(doc: Document, rank: Mapping[str, int]) -> tuple[ClassDetector, ...]:
    """Detector groups, most sensitive class first, so a scan can stop at the first hit."""
    groups = []
    for rule in doc.classify.detectors:
        found = [detectors.builtin(name) for name in rule.detect]
        found += [detectors.regex(name, pattern) for name, pattern in rule.regex.items()]
        groups.append(ClassDetector(rule.data_class, rank[rule.data_class], tuple(found)))
    return tuple(sorted(groups, key=lambda g: -g.rank))
