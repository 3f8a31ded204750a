"""The loaded policy's indexes: keys to tenants, routes per tenant, prices and costs, detector groups by rank."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from gateway.routing.policy.model import KEY_PREFIX, OpenAIOnly, Policy, hash_key
from gateway.routing.policy.schema import Document

KEY = KEY_PREFIX + "model-test-0123456789abcdef0123456789"
OTHER = KEY_PREFIX + "model-other-0123456789abcdef012345678"


def document(**changes: Any) -> Document:
    doc: dict[str, Any] = {
        "version": 1,
        "upstreams": {
            "self": {"base_url": "http://vllm:8000/v1", "model": "q", "region": "eu-west", "hosting": "self",
                     "cost": {"input_per_mtok": 1.0, "output_per_mtok": 4.0}},
            "cloud": {"base_url": "https://api.example.com/v1", "model": "g", "region": "us"},
        },
        "models": {"chat": {"candidates": ["self", "cloud"]}, "embed": {"candidates": ["self"]}},
        "data_classes": {"public": {}, "internal": {}, "personal": {"hosting": ["self"]}},
        "classify": {"detectors": [{"detect": ["email"], "class": "internal"},
                                   {"detect": ["iban"], "regex": {"badge": "B-[0-9]{6}"}, "class": "personal"}]},
        "tenants": {"acme": {"keys": [hash_key(KEY)]}, "small": {"keys": [hash_key(OTHER)], "models": ["embed"]}},
    }
    doc.update(changes)
    return Document.model_validate(doc)


def policy() -> Policy:
    return Policy.build(document(), "sha256:digest", "policy.yaml", {"cloud": (2e-6, 8e-6)})


def test_a_key_is_stored_as_its_sha256() -> None:
    assert hash_key("abc") == "sha256:" + hashlib.sha256(b"abc").hexdigest()


def test_a_raw_key_finds_its_tenant_and_a_wrong_one_none() -> None:
    built = policy()
    found = built.tenant(KEY)
    assert found is not None
    assert found[0] == "acme"
    assert built.tenant(KEY) is found  # remembered: the second look-up skips the hash
    assert built.tenant(KEY_PREFIX + "wrong") is None
    assert KEY_PREFIX + "wrong" not in built.known_keys


def test_routes_are_every_route_or_the_tenants_own_in_policy_order() -> None:
    built = policy()
    assert built.routes_for(built.doc.tenants["acme"]) == ("chat", "embed")
    assert built.routes_for(built.doc.tenants["small"]) == ("embed",)


def test_prices_come_from_the_cost_block_else_the_catalog_and_say_which() -> None:
    built = policy()
    assert built.price["self"] == pytest.approx((1e-6, 4e-6))
    assert built.price["cloud"] == (2e-6, 8e-6)
    assert dict(built.price_source) == {"self": "policy", "cloud": "litellm price map"}
    assert built.cost("self", 1000, 500) == pytest.approx(1000 * 1e-6 + 500 * 4e-6)


def test_detector_groups_run_most_sensitive_class_first() -> None:
    groups = policy().class_detectors
    assert [(g.data_class, g.rank) for g in groups] == [("personal", 2), ("internal", 1)]
    assert [d.name for d in groups[0].detectors] == ["iban", "badge"]


def test_the_indexes_cannot_be_changed() -> None:
    built = policy()
    with pytest.raises(TypeError):
        built.price["self"] = (0.0, 0.0)  # type: ignore[index]


def test_without_translation_only_openai_is_known_and_nothing_is_priced() -> None:
    catalog = OpenAIOnly()
    assert catalog.knows("openai")
    assert not catalog.knows("anthropic")
    assert catalog.price("openai", "gpt-4o") is None
