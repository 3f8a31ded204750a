"""The policies shipped in policies/ and bench/ load as they are."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.policy.loader import load_policy

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("path", ["policies", "bench/policy.yaml", "bench/policy-detectors.yaml",
                                  "bench/policy-limits.yaml"])
def test_shipped_policy_loads(path: str) -> None:
    policy = load_policy(ROOT / path, {})
    assert policy.doc.models


def test_default_policy_answers_the_documented_dev_key() -> None:
    policy = load_policy(ROOT / "policies", {})
    assert policy.tenant("sk-sy-dev-only-replace-me-0123456789abcdef") is not None
