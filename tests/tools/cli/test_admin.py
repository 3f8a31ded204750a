"""`switchyard keys`, `spend` and `audit verify`: keys minted and hashed, admin key files read or refused."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from gateway.routing.policy.model import hash_key
from gateway.tools.cli import main
from tests.conftest import KEY, Loop
from tests.tools.cli.helpers import free_port

if TYPE_CHECKING:
    pass


def test_keys_new_prints_a_key_and_the_hash_to_store(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "new", "--tenant", "acme"]) == 0
    out = capsys.readouterr().out
    key = re.search(r"key:  (sk-sy-\S+)", out)
    assert key is not None
    assert len(key.group(1)) >= 38
    assert f"hash: {hash_key(key.group(1))}" in out
    assert f'keys: ["{hash_key(key.group(1))}"]' in out



def hash_through_the_command(key: str) -> str:
    done = subprocess.run([sys.executable, "-m", "gateway.tools.cli", "keys", "hash"], input=key + "\n",
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert key not in done.stdout + done.stderr
    return done.stdout.strip()



def test_keys_hash_reads_the_key_from_stdin_and_prints_only_its_hash() -> None:
    printed = hash_through_the_command("sy-admin-0123456789abcdef0123456789")
    assert printed == hash_key("sy-admin-0123456789abcdef0123456789")
    done = subprocess.run([sys.executable, "-m", "gateway.tools.cli", "keys", "hash"], input="\n",
                          capture_output=True, text=True, timeout=30)
    assert (done.returncode, done.stdout) == (1, "")
    assert "no key on stdin" in done.stderr



def test_an_admin_key_hashed_by_keys_hash_reads_spend_from_its_key_file(
        loop: Loop, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.conftest import start_stack

    admin_key = "sy-admin-from-a-file-0123456789abcdef"
    stack = start_stack(loop, tmp_path, names=("primary",), admin={"keys": [hash_through_the_command(admin_key)]})
    key_file = tmp_path / "admin.key"
    key_file.write_text(admin_key + "\n")
    monkeypatch.setenv("SWITCHYARD_ADMIN_KEY", KEY)  # a tenant's key: the file must win over it
    assert main(["spend", "--url", stack.served.url, "--admin-key-file", str(key_file), "--json"]) == 0
    assert "tenants" in capsys.readouterr().out
    assert main(["spend", "--url", stack.served.url]) == 1
    assert "403: this is a tenant key" in capsys.readouterr().err



@pytest.mark.parametrize(("content", "message"), [(None, "cannot read it"), ("\n", "the file is empty")])
def test_spend_refuses_an_admin_key_file_it_cannot_use(tmp_path: Path, content: str | None, message: str,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    key_file = tmp_path / "admin.key"
    if content is not None:
        key_file.write_text(content)
    assert main(["spend", "--url", f"http://127.0.0.1:{free_port()}", "--admin-key-file", str(key_file)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"--admin-key-file {key_file}: {message}")



def test_audit_verify_refuses_a_short_key_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "audit.key"
    key.write_text("short")
    with pytest.raises(SystemExit):
        main(["audit", "verify", "--key-file", str(key), str(tmp_path / "trail.jsonl")])
    assert "at least 16 bytes" in capsys.readouterr().err
