"""`switchyard policy check`: every problem on its own line, notes on open upstreams, hostile YAML refused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from gateway.routing.policy.loader import load_policy
from gateway.tools.cli import main
from tests.conftest import upstream_spec, write_policy

if TYPE_CHECKING:
    pass


def test_policy_check_accepts_a_good_policy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_policy(tmp_path, {"a": upstream_spec("http://127.0.0.1:1")}, {"chat": {"candidates": ["a"]}})
    assert main(["policy", "check", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"ok: {path} (policy {load_policy(path).hash})")
    assert "upstream a (openai): price from the policy: $1.0000 in, $2.0000 out per Mtok" in out


def test_policy_check_shows_cache_prices_where_they_are_not_the_input_price(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cost = {"input_per_mtok": 3.0, "output_per_mtok": 15.0, "cache_read_per_mtok": 0.3}
    spec = upstream_spec("http://127.0.0.1:1", cost=cost)
    path = write_policy(tmp_path, {"a": spec}, {"chat": {"candidates": ["a"]}})
    assert main(["policy", "check", str(path)]) == 0
    assert ("upstream a (openai): price from the policy: $3.0000 in, $15.0000 out, $0.3000 cache read, "
            "$3.0000 cache write per Mtok") in capsys.readouterr().out



def test_policy_check_prints_one_line_per_problem_and_exits_1(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    path = write_policy(tmp_path, {"a": upstream_spec("http://127.0.0.1:1", regoin="x")},
                        {"chat": {"candidates": ["a", "b"]}})
    assert main(["policy", "check", str(path)]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert lines == [f"{path}: upstreams.a.regoin: unknown key 'regoin' (did you mean 'region'?)",
                     f"{path}: models.chat.candidates[1]: upstream 'b' is not defined",
                     f"{path}: 2 problem(s); the policy was not loaded"]



def test_policy_check_notes_upstreams_that_list_no_capabilities(tmp_path: Path) -> None:
    unlisted = {k: v for k, v in upstream_spec("http://127.0.0.1:1").items() if k != "capabilities"}
    upstreams = {"open": unlisted, "narrow": upstream_spec("http://127.0.0.1:1", capabilities=["json"])}
    path = write_policy(tmp_path, upstreams, {"chat": {"candidates": ["open", "narrow"]}})
    done = subprocess.run([sys.executable, "-m", "gateway.tools.cli", "policy", "check", str(path)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    notes = [line for line in done.stdout.splitlines() if line.startswith("note: ")]
    assert notes == ["note: upstreams.open: lists no capabilities, so requests needing any of json, responses, "
                     "tools, vision may go to it and its own answer decides; list `capabilities` to narrow it"]



def test_policy_check_refuses_a_yaml_alias_bomb_naming_the_file(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from tests.routing.policy.test_loader import alias_bomb

    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb())
    assert main(["policy", "check", str(path)]) == 1
    assert f"{path}: its aliases expand it to more than 200,000 values" in capsys.readouterr().err
