"""gateway.tools.cases behind `switchyard policy test`: a bad case is an error at its file and line; the rest run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.routing.policy.loader import load_policy
from gateway.tools.cases import load_cases, run_entry
from gateway.tools.cli import main
from gateway.tools.explain import ENDPOINTS

ROOT = Path(__file__).resolve().parents[2]
GOOD = ("    tenant: dev\n    request: {model: chat, messages: [{role: user, content: hi}]}\n"
        "    expect: {first: local-vllm}\n")
CASES = f"""\
cases:
  - name: first good
{GOOD}  - name: unknown endpoint
    tenant: dev
    endpoint: audio
    request: {{model: chat, messages: [{{role: user, content: hi}}]}}
    expect: {{first: local-vllm}}
  - name: no expect
    tenant: dev
    request: {{model: chat, messages: [{{role: user, content: hi}}]}}
  - name: wrong type
    tenant: dev
    request: {{model: chat, messages: [{{role: user, content: hi}}]}}
    health:
      down: local-vllm
    expect: {{first: openai}}
  - just a string
  - name: last good
{GOOD}"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "policy.yaml").write_text((ROOT / "policies" / "switchyard.yaml").read_text())
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "cases.yaml").write_text(CASES)
    return tmp_path


def test_each_case_is_read_on_its_own_with_its_line(folder: Path) -> None:
    entries = load_cases(folder / "tests" / "cases.yaml")
    assert [(e.line, e.name, e.case is not None) for e in entries] == [
        (2, "first good", True), (6, "unknown endpoint", False), (11, "no expect", False),
        (14, "wrong type", False), (20, "(not a case)", False), (21, "last good", True)]
    assert entries[1].problems == ("line 8: endpoint: Input should be 'chat', 'completions', 'embeddings', "
                                   "'responses' or 'messages'",)
    assert entries[2].problems == ("line 11: expect: required key is missing",)
    assert entries[3].problems == ("line 18: health.down: Input should be a valid tuple",)


def test_a_bad_case_is_an_error_and_the_others_still_run(folder: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "gateway.tools.cli", "policy", "test", str(folder)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
    assert "Traceback" not in done.stdout + done.stderr
    file = folder / "tests" / "cases.yaml"
    verdicts = [line for line in done.stdout.splitlines() if not line.startswith(" ")]
    assert verdicts == [f"PASS {file}:2: first good", f"ERROR {file}:6: unknown endpoint",
                        f"ERROR {file}:11: no expect", f"ERROR {file}:14: wrong type",
                        f"ERROR {file}:20: (not a case)", f"PASS {file}:21: last good",
                        "2 passed, 0 failed, 4 error(s)"]


@pytest.mark.parametrize(("text", "message"), [
    ("cases: [\n", ":2: not valid YAML"),
    ("- name: a list, not a mapping\n", ":1: a case file is a mapping with one key, `cases`"),
    ("cases: []\n", ":1: a case file is a mapping with one key, `cases`"),
])
def test_a_file_without_a_cases_list_is_one_error_and_other_files_still_run(
        folder: Path, capsys: pytest.CaptureFixture[str], text: str, message: str) -> None:
    (folder / "tests" / "0-broken.yaml").write_text(text)
    assert main(["policy", "test", str(folder)]) == 1
    out = capsys.readouterr().out
    assert f"ERROR {folder / 'tests' / '0-broken.yaml'}{message}" in out
    assert out.rstrip().endswith("2 passed, 0 failed, 5 error(s)")


def test_a_case_of_every_endpoint_is_decided(folder: Path) -> None:
    bodies = {"chat": "messages: [{role: user, content: hi}]", "completions": "prompt: hi", "embeddings": "input: hi",
              "responses": "input: hi", "messages": "max_tokens: 8, messages: [{role: user, content: hi}]"}
    assert set(bodies) == set(ENDPOINTS)
    first = {e: "openai" if e == "responses" else "local-vllm" for e in ENDPOINTS}
    text = "cases:\n" + "".join(f"  - name: {e}\n    tenant: dev\n    endpoint: {e}\n    request: {{model: chat, "
                                f"{bodies[e]}}}\n    expect: {{first: {first[e]}}}\n" for e in ENDPOINTS)
    (folder / "tests" / "cases.yaml").write_text(text)
    policy = load_policy(folder / "policy.yaml", {})
    results = [run_entry(policy, entry) for entry in load_cases(folder / "tests" / "cases.yaml")]
    assert [(r.name, r.problems) for r in results] == [(e, ()) for e in ENDPOINTS]
