"""`switchyard policy explain` and the case runner behind `switchyard policy test`, with and without `--load`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from gateway.tools.cli import main
from tests.conftest import KEY
from tests.routing.policy.test_schema import POLICY as CAPACITY_POLICY

ROOT = Path(__file__).resolve().parents[2]
POLICY = str(ROOT / "policies")
DEV_KEY = "sk-sy-dev-only-replace-me-0123456789abcdef"


def request(tmp_path: Path, content: str, **extra: object) -> str:
    path = tmp_path / "request.json"
    path.write_text(json.dumps({"model": "chat", "messages": [{"role": "user", "content": content}], **extra}))
    return str(path)


def test_explain_prints_every_step(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "explain", POLICY, "--key", DEV_KEY, "--request", request(tmp_path, "hello")]) == 0
    out = capsys.readouterr().out
    assert "1. who: tenant 'dev'" in out
    assert "3. data class: public (default)" in out
    assert "6. order by cost:" in out
    assert out.index("1. local-vllm") < out.index("2. openai")


def test_explain_names_the_detector_and_the_exclusions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    body = request(tmp_path, "Card 4111 1111 1111 1111 expires soon")
    assert main(["policy", "explain", POLICY, "--key", DEV_KEY, "--request", body, "--down", "local-vllm"]) == 2
    out = capsys.readouterr().out
    assert "3. data class: personal (detector credit_card)" in out
    assert "openai" in out
    assert "excluded (data_class)" in out
    assert "5. -> 403 residency_unavailable" in out


def test_explain_refuses_an_unknown_key_and_malformed_options(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    body = request(tmp_path, "hi")
    assert main(["policy", "explain", POLICY, "--key", "sk-sy-nobody", "--request", body]) == 2
    assert main(["policy", "explain", POLICY, "--key", DEV_KEY, "--request", body, "--header", "x-priority"]) == 1
    assert "'x-priority' is not NAME:VALUE" in capsys.readouterr().err


def test_explain_takes_live_latency(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = str(ROOT / "policies" / "examples" / "latency-first" / "policy.yaml")
    key = "sk-sy-example-latency-chat-app-0123456789abcdef"
    body = request(tmp_path, "hi", stream=True)
    assert main(["policy", "explain", policy, "--key", key, "--request", body]) == 0
    unmeasured = capsys.readouterr().out.split("6. order by latency:")[1].split()
    assert main(["policy", "explain", policy, "--key", key, "--request", body, "--ttft", f"{unmeasured[1]}=5000"]) == 0
    measured = capsys.readouterr().out.split("6. order by latency:")[1].split()
    assert measured[1] != unmeasured[1]
    assert main(["policy", "explain", policy, "--key", key, "--request", body, "--ttft", "nope=abc"]) == 1


def test_a_case_naming_an_unknown_upstream_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "policy.yaml").write_text((ROOT / "policies" / "switchyard.yaml").read_text())
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "typo.yaml").write_text(
        "cases:\n  - name: typo\n    tenant: dev\n    request: {model: chat, messages: [{role: user, content: hi}]}\n"
        "    health: {down: [local-vlm]}\n    expect: {first: local-vllm, rule: null}\n")
    assert main(["policy", "test", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert f"ERROR {tmp_path / 'tests' / 'typo.yaml'}:2: typo" in out
    assert "upstream 'local-vlm' is not in the policy" in out
    assert out.rstrip().endswith("0 passed, 0 failed, 1 error(s)")


def test_explain_shows_n_and_estimates_every_choice(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def explained(**extra: object) -> tuple[str, list[float]]:
        assert main(["policy", "explain", POLICY, "--key", DEV_KEY, "--request",
                     request(tmp_path, "hello", max_tokens=1000, **extra)]) == 0
        out = capsys.readouterr().out
        return out, [float(line.rsplit("$", 1)[1]) for line in out.splitlines() if "estimated $" in line]

    (one_out, one), (ten_out, ten) = explained(), explained(n=10)
    assert "max_tokens 1000, stream" in one_out
    assert "max_tokens 1000, n 10, stream" in ten_out
    assert len(one) == len(ten) > 0
    assert all(b > a for a, b in zip(one, ten, strict=True) if a > 0)
    assert any(a > 0 for a in one)


@pytest.mark.parametrize(("endpoint", "body", "first"), [
    ("chat", {"messages": [{"role": "user", "content": "hi"}]}, "local-vllm"),
    ("completions", {"prompt": "hi"}, "local-vllm"),
    ("embeddings", {"input": "hi"}, "local-vllm"),
    ("responses", {"input": "hi"}, "openai"),
])
def test_explain_takes_every_endpoint_the_gateway_serves(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                         endpoint: str, body: dict[str, object], first: str) -> None:
    path = tmp_path / "request.json"
    path.write_text(json.dumps({"model": "chat", **body}))
    assert main(["policy", "explain", POLICY, "--key", DEV_KEY, "--request", str(path), "--endpoint", endpoint]) == 0
    assert f"1. {first}" in capsys.readouterr().out


def test_explain_names_the_capability_no_upstream_has(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "request.json"
    path.write_text(json.dumps({"model": "chat", "input": "hi"}))
    assert main(["policy", "explain", POLICY, "--key", DEV_KEY, "--request", str(path), "--endpoint", "responses",
                 "--down", "openai"]) == 2
    assert "excluded (capability)" in capsys.readouterr().out


@pytest.fixture
def capacity_policy(tmp_path: Path) -> str:
    (tmp_path / "policy.yaml").write_text(CAPACITY_POLICY.replace("{CAPACITY}", "{engine: vllm, max_waiting: 4}")
                                          + "data_classes:\n  public: {}\n  personal: {hosting: [self]}\n")
    return str(tmp_path / "policy.yaml")


def explain_loaded(capacity_policy: str, tmp_path: Path, *options: str) -> None:
    body = request(tmp_path, "hello")
    assert main(["policy", "explain", capacity_policy, "--key", KEY, "--request", body, *options]) == 0


def test_explain_shows_the_full_upstream_moved_back(capacity_policy: str, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    explain_loaded(capacity_policy, tmp_path)
    assert "moved back" not in capsys.readouterr().out
    explain_loaded(capacity_policy, tmp_path, "--load", "qwen-eu=full")
    out = capsys.readouterr().out
    assert out.index("1. gpt") < out.index("2. qwen-eu")
    assert "moved back (full): qwen-eu" in out
    assert "spilled from qwen-eu to gpt" in out


def test_a_queue_length_is_judged_against_max_waiting(capacity_policy: str, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    explain_loaded(capacity_policy, tmp_path, "--load", "qwen-eu=4")
    assert "1. qwen-eu" in capsys.readouterr().out
    explain_loaded(capacity_policy, tmp_path, "--load", "qwen-eu=5")
    assert "1. gpt" in capsys.readouterr().out


def test_bad_loads_are_refused_with_a_reason(capacity_policy: str, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    body = request(tmp_path, "hello")
    for load, reason in (("nope=full", "upstream 'nope' is not in the policy"),
                         ("qwen-eu=busy", "give full, open or a queue length"),
                         ("gpt=3", "a queue length needs capacity.max_waiting on gpt")):
        assert main(["policy", "explain", capacity_policy, "--key", KEY, "--request", body, "--load", load]) == 1
        assert reason in capsys.readouterr().err


def test_cases_take_a_load_map(capacity_policy: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
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
    assert main(["policy", "test", capacity_policy]) == 1
    out = capsys.readouterr().out
    for name in ("spills when full", "stays when open", "personal data queues"):
        assert re.search(rf"^PASS \S*capacity\.yaml:\d+: {name}$", out, re.M)
    assert re.search(r"^FAIL \S*capacity\.yaml:\d+: wrong on purpose$", out, re.M)
    assert re.search(r"^ERROR \S*capacity\.yaml:\d+: bad load$", out, re.M)
    assert "expected first qwen-eu, got gpt" in out
    assert "load: upstream 'qwen-xx' is not in the policy" in out
