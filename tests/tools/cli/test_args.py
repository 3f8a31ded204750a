"""The command's argument types and root options: --version, Redis URLs and files, limits that must be positive."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from gateway.tools.cli import main

if TYPE_CHECKING:
    pass


def test_version_prints_the_installed_version(capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.metadata

    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"switchyard {importlib.metadata.version('switchyard')}\n"



@pytest.mark.parametrize(("url", "why"), [
    ("http://u:secret-pw@redis:6379", "starts with redis://, rediss:// or unix://, not http://"),
    ("redis://:secret-pw@redis:63x9/0", "port is not a number"),
    ("redis://:secret-pw@redis:6379/zero", "database must be a number"),
    ("rediss://:secret-pw@redis:6379/0?ssl_ca_certs=/nowhere/ca.pem", "cannot use the TLS files it names"),
])
def test_serve_refuses_a_redis_url_it_cannot_use_without_echoing_the_password(
        url: str, why: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--redis", url])
    err = capsys.readouterr().err
    assert exited.value.code == 2
    assert "argument --redis:" in err.splitlines()[-1]
    assert why in err.splitlines()[-1]
    assert "secret-pw" not in err



@pytest.mark.parametrize("flag", [["--body-timeout-s", "-1"], ["--redis-timeout-ms", "0"],
                                  ["--redis-timeout-ms", "-5"]])
def test_serve_refuses_a_limit_that_is_not_positive(flag: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["serve", *flag])
    assert exited.value.code == 2
    assert f"argument {flag[0]}:" in capsys.readouterr().err



@pytest.mark.parametrize(("content", "why"), [
    ("", "is empty: it should hold a Redis URL"),
    ("http://u:secret-pw@redis:6379\n", "starts with redis://"),
])
def test_serve_refuses_a_redis_file_it_cannot_use_without_echoing_the_password(
        tmp_path: Path, content: str, why: str, capsys: pytest.CaptureFixture[str]) -> None:
    url_file = tmp_path / "redis.url"
    url_file.write_text(content)
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--redis-file", str(url_file)])
    err = capsys.readouterr().err.splitlines()[-1]
    assert exited.value.code == 2
    assert f"argument --redis-file: {url_file}" in err
    assert why in err
    assert "secret-pw" not in err
