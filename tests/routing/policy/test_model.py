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
    return Policy.build(document(), "sha256:digest", "policy.yaml", {"cloud": (2e-6, 8e-6, 2e-6, 2e-6, 2e-6)})


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
    assert built.price["self"] == pytest.approx((1e-6, 4e-6, 1e-6, 1e-6, 1e-6))
    assert built.price["cloud"] == (2e-6, 8e-6, 2e-6, 2e-6, 2e-6)
    assert dict(built.price_source) == {"self": "policy", "cloud": "litellm price map"}
    assert built.cost("self", 1000, 500) == pytest.approx(1000 * 1e-6 + 500 * 4e-6)


def test_detector_groups_run_most_sensitive_class_first() -> None:
    groups = policy().class_detectors
    assert [(g.data_class, g.rank) for g in groups] == [("personal", 2), ("internal", 1)]
    assert [d.name for d in groups[0].detectors] == ["iban", "badge"]


def test_the_indexes_cannot_be_changed() -> None:
    built = policy()
    with pytest.raises(TypeError):
        built.price["self"] = (0.0, 0.0, 0.0, 0.0)  # type: ignore[index]


def test_without_translation_only_openai_is_known_and_nothing_is_priced() -> None:
    catalog = OpenAIOnly()
    assert catalog.knows("openai")
    assert not catalog.knows("anthropic")
    assert catalog.price("openai", "gpt-4o") is None


def test_a_cost_block_may_price_cache_reads_and_writes_of_its_own() -> None:
    cost = {"input_per_mtok": 3.0, "output_per_mtok": 15.0, "cache_read_per_mtok": 0.3, "cache_write_per_mtok": 3.75}
    built = Policy.build(document(upstreams={"a": {"base_url": "http://a/v1", "model": "a", "cost": cost}},
                                  models={"chat": {"candidates": ["a"]}}, data_classes={}, classify={}),
                         "sha256:digest", "policy.yaml", {})
    assert built.price["a"] == pytest.approx((3e-6, 15e-6, 0.3e-6, 3.75e-6, 3.75e-6))
    # 10 prompt tokens of which 4 cache reads and 2 cache writes, and 5 completion tokens
    assert built.cost("a", 10, 5, 4, 2) == pytest.approx((4 * 3.0 + 4 * 0.3 + 2 * 3.75 + 5 * 15.0) / 1e6)
    assert built.cost("a", 10, 5) == pytest.approx((10 * 3.0 + 5 * 15.0) / 1e6)  # no cache parts: as before


def test_without_cache_prices_a_cache_token_costs_the_input_price() -> None:
    built = policy()
    assert built.cost("self", 10, 5, 4, 2) == built.cost("self", 10, 5) == pytest.approx((10 * 1.0 + 5 * 4.0) / 1e6)
    assert built.cost("cloud", 10, 5, 4, 2) == pytest.approx((10 * 2.0 + 5 * 8.0) / 1e6)


@pytest.mark.parametrize(("cost", "per_prompt_token"), [
    ({"input_per_mtok": 3.0, "output_per_mtok": 15.0, "cache_write_per_mtok": 3.75}, 3.75e-6),  # the write premium
    ({"input_per_mtok": 3.0, "output_per_mtok": 15.0, "cache_read_per_mtok": 0.3}, 3e-6),  # a discount: the input
    ({"input_per_mtok": 3.0, "output_per_mtok": 15.0, "cache_read_per_mtok": 5.0}, 5e-6),  # whichever is dearest
    ({"input_per_mtok": 3.0, "output_per_mtok": 15.0}, 3e-6),
])
def test_the_reservation_prices_every_prompt_token_at_the_dearest_prompt_price(cost: dict[str, float],
                                                                               per_prompt_token: float) -> None:
    built = Policy.build(document(upstreams={"a": {"base_url": "http://a/v1", "model": "a", "cost": cost}},
                                  models={"chat": {"candidates": ["a"]}}, data_classes={}, classify={}),
                         "sha256:digest", "policy.yaml", {})
    assert built.reservation("a", 1000, 10) == pytest.approx(1000 * per_prompt_token + 10 * 15e-6)
    assert built.reservation("a", 1000, 10) >= built.cost("a", 1000, 10, 0, 1000)  # all cache writes
    assert built.reservation("a", 1000, 10) >= built.cost("a", 1000, 10, 1000, 0)  # all cache reads


def test_each_route_knows_the_smallest_context_window_its_candidates_declare() -> None:
    unpriced = {"cloud": (0.0, 0.0, 0.0, 0.0, 0.0)}
    assert Policy.build(document(), "d", "p", unpriced).smallest_window == {"chat": None, "embed": None}
    upstreams = {**document().model_dump()["upstreams"]}
    upstreams["self"]["context_window"] = 32_000
    upstreams["cloud"]["context_window"] = 8_000
    built = Policy.build(document(upstreams=upstreams), "d", "p", {"cloud": (0.0, 0.0, 0.0, 0.0, 0.0)})
    assert built.smallest_window == {"chat": 8_000, "embed": 32_000}


def test_one_hour_cache_writes_cost_their_own_price_and_the_reservation_covers_it() -> None:
    cost = {"input_per_mtok": 3.0, "output_per_mtok": 15.0, "cache_read_per_mtok": 0.3, "cache_write_per_mtok": 3.75,
            "cache_write_1h_per_mtok": 6.0}
    built = Policy.build(document(upstreams={"a": {"base_url": "http://a/v1", "model": "a", "cost": cost}},
                                  models={"chat": {"candidates": ["a"]}}, data_classes={}, classify={}),
                         "sha256:digest", "policy.yaml", {})
    # 10 prompt tokens: 4 cache reads, 3 writes of which 2 kept for an hour; 5 completion tokens
    assert built.cost("a", 10, 5, 4, 3, 2) == pytest.approx((3 * 3.0 + 4 * 0.3 + 1 * 3.75 + 2 * 6.0 + 5 * 15.0) / 1e6)
    assert built.reservation("a", 10, 5) == pytest.approx((10 * 6.0 + 5 * 15.0) / 1e6)  # every prompt token at 1h
