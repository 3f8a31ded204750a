"""`policy explain --load` and `load:` in policy test cases: when and why an upstream was moved back."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from gateway.tools.cli import main
from tests.conftest import KEY
from tests.routing.policy.test_schema import POLICY


@pytest.fixture
def policy(tmp_path: Path) -> str:
    (tmp_path / "policy.yaml").write_text(POLICY.replace("{CAPACITY}", "{engine: vllm, max_waiting: 4}")
                                          + "data_classes:\n  public: {}\n  personal: {hosting: [self]}\n")
    return str(tmp_path / "policy.yaml")


def request(tmp_path: Path) -> str:
    path = tmp_path / "request.json"
    path.write_text(json.dumps({"model": "chat", "messages": [{"role": "user", "content": "hello"}]}))
    return str(path)


def explain(policy: str, tmp_path: Path, *options: str) -> None:
    assert main(["policy", "explain", policy, "--key", KEY, "--request", request(tmp_path), *options]) == 0


def test_explain_shows_the_full_upstream_moved_back(policy: str, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    explain(policy, tmp_path)
    assert "moved back" not in capsys.readouterr().out
    explain(policy, tmp_path, "--load", "qwen-eu=full")
    out = capsys.readouterr().out
    assert out.index("1. gpt") < out.index("2. qwen-eu")
    assert "moved back (full): qwen-eu" in out
    assert "spilled from qwen-eu to gpt" in out


def test_a_queue_length_is_judged_against_max_waiting(policy: str, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    explain(policy, tmp_path, "--load", "qwen-eu=4")
    assert "1. qwen-eu" in capsys.readouterr().out
    explain(policy, tmp_path, "--load", "qwen-eu=5")
    assert "1. gpt" in capsys.readouterr().out


def test_bad_loads_are_refused_with_a_reason(policy: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    body = request(tmp_path)
    for load, reason in (("nope=full", "upstream 'nope' is not in the policy"),
                         ("qwen-eu=busy", "give full, open or a queue length"),
                         ("gpt=3", "a queue length needs capacity.max_waiting on gpt")):
        assert main(["policy", "explain", policy, "--key", KEY, "--request", body, "--load", load]) == 1
        assert reason in capsys.readouterr().err


def test_cases_take_a_load_map(policy: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hello = {"model": "chat", "messages": [{"role": "user", "content": "hello"}]}
    cases = {"cases": [
        {"name": "spills when full", "tenant": "acme", "request": hello, "load": {"qwen-eu": "full"},
         "expect": {"upstreams": ["gpt", "qwen-eu"]}},
        {"name": "stays when open", "tenant": "acme", "request": hello, "load": {"qwen-eu": 2},
         "expect": {"first": "qwen-eu"}},
        {"name": "personal data queues", "tenant": "acme", "request": hello, "load": {"qwen-eu": "full"},
         "headers": {"x-switchyard-data-class": "personal"}, "expect": {"upstreams": ["qwen-eu"]}},
        {"name": "wrong on purpose", "tenant": "acme", "request": hello, "load": {"qwen-eu": "full"},
         "expect": {"first": "qwen-eu"}},
        {"name": "bad load", "tenant": "acme", "request": hello, "load": {"qwen-xx": "full"},
         "expect": {"first": "qwen-eu"}},
    ]}
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "capacity.yaml").write_text(yaml.safe_dump(cases))
    assert main(["policy", "test", policy]) == 1
    out = capsys.readouterr().out
    for name in ("spills when full", "stays when open", "personal data queues"):
        assert re.search(rf"^PASS \S*capacity\.yaml:\d+: {name}$", out, re.M)
    assert re.search(r"^FAIL \S*capacity\.yaml:\d+: wrong on purpose$", out, re.M)
    assert re.search(r"^ERROR \S*capacity\.yaml:\d+: bad load$", out, re.M)
    assert "expected first qwen-eu, got gpt" in out
    assert "load: upstream 'qwen-xx' is not in the policy" in out
