"""Which exclusions are residency's, and the refusal when residency leaves no upstream that works."""

from __future__ import annotations

from collections.abc import Sequence

from gateway.errors import NoCandidate

RESIDENCY_REASONS = frozenset({"data_class", "tenant_region"})


def residency_limited(excluded: Sequence[tuple[str, str]]) -> bool:
    """True when residency kept some candidate out: then no other upstream may stand in for a failed one."""
    return any(reason in RESIDENCY_REASONS for _, reason in excluded)


def residency_unavailable(data_class: str | None, summary: str, excluded: tuple[tuple[str, str], ...]) -> NoCandidate:
    """The refusal once every upstream residency allows failed (summary: how each failed)."""
    return NoCandidate("residency_unavailable", f"every upstream allowed for data class '{data_class}' failed "
                       f"({summary}); no other upstream may stand in", excluded)
