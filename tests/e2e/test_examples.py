"""The shipped policies (policies/ and every policies/examples/*/) load, and their own test cases all pass."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gateway.tools.cli import main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(path for path in (ROOT / "policies" / "examples").iterdir() if path.is_dir())
POLICIES = [ROOT / "policies", *EXAMPLES]
IDS = [str(path.relative_to(ROOT)) for path in POLICIES]


def count_cases(policy: Path) -> int:
    """How many cases the policy's tests/*.yaml hold, counted independently of the gateway's loader."""
    files = [*policy.joinpath("tests").glob("*.yaml"), *policy.joinpath("tests").glob("*.yml")]
    return sum(len(yaml.safe_load(file.read_text(encoding="utf-8"))["cases"]) for file in files)


def test_the_three_examples_are_there() -> None:
    assert {path.name for path in EXAMPLES} >= {"cost-saver", "eu-residency", "latency-first"}


@pytest.mark.parametrize("policy", POLICIES, ids=IDS)
def test_policy_checks(policy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "check", str(policy)]) == 0
    assert capsys.readouterr().out.startswith(f"ok: {policy} ")


@pytest.mark.parametrize("policy", POLICIES, ids=IDS)
def test_policy_cases_pass(policy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cases = count_cases(policy)
    assert cases >= 8, f"{policy}: expected at least 8 cases, found {cases}"
    status = main(["policy", "test", str(policy)])
    out = capsys.readouterr().out
    assert status == 0, out
    assert out.rstrip().endswith(f"{cases} passed, 0 failed"), out
    assert not [line for line in out.splitlines() if line.startswith("FAIL ")], out
