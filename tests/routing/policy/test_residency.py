"""Which exclusions are residency's, and the 403 when residency leaves no upstream that works."""

from __future__ import annotations

from gateway.routing.policy.residency import RESIDENCY_REASONS, residency_limited, residency_unavailable


def test_only_data_class_and_tenant_region_exclusions_limit_by_residency() -> None:
    assert {"data_class", "tenant_region"} == RESIDENCY_REASONS
    assert residency_limited([("a", "circuit_open"), ("b", "data_class")])
    assert residency_limited([("a", "tenant_region")])
    assert not residency_limited([("a", "circuit_open"), ("b", "capability"), ("c", "budget")])
    assert not residency_limited([])


def test_the_refusal_is_a_403_naming_the_data_class_and_how_each_upstream_failed() -> None:
    excluded = (("cloud", "data_class"), ("local", "circuit_open"))
    refusal = residency_unavailable("personal", "local: circuit open", excluded)
    assert (refusal.status, refusal.code, refusal.type) == (403, "residency_unavailable", "invalid_request_error")
    assert refusal.message == ("every upstream allowed for data class 'personal' failed (local: circuit open); "
                               "no other upstream may stand in")
    assert refusal.excluded == excluded
