"""The policies shipped in policies/ and bench/ load as they are."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.routing.policy.loader import load_policy

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", ["policies", "bench/policy.yaml", "bench/policy-detectors.yaml",
                                  "bench/policy-limits.yaml", "bench/policy-capacity.yaml"])
def test_shipped_policy_loads(path: str) -> None:
    policy = load_policy(ROOT / path, {})
    assert policy.doc.models


def test_default_policy_answers_the_documented_dev_key() -> None:
    policy = load_policy(ROOT / "policies", {})
    assert policy.tenant("sk-sy-dev-only-replace-me-0123456789abcdef") is not None


def test_the_example_of_docs_policy_md_loads_and_keeps_personal_data_home(tmp_path: Path) -> None:
    import re

    from gateway.routing.policy.decide import Features, decide
    from gateway.upstreams.catalog import LitellmCatalog

    example = re.search(r"```yaml\n(.*?)```", (ROOT / "docs" / "policy.md").read_text(), re.S)
    assert example is not None
    (tmp_path / "policy.yaml").write_text(example.group(1))
    policy = load_policy(tmp_path / "policy.yaml", {"OPENAI_API_KEY": "k", "ANTHROPIC_API_KEY": "k"},
                         LitellmCatalog())
    assert policy.price_source == {"qwen-eu": "policy", "gpt-4o": "policy", "claude": "litellm price map"}
    features = Features(route="chat", tenant="acme-eu", prompt_tokens=50, data_class="personal")
    assert decide(policy, features).candidates == ("qwen-eu",)
