"""The `switchyard` command: policy check, keys new, and serve as a real process (workers, drain)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import openai
import orjson
import pytest

from gateway.routing.policy.loader import load_policy
from gateway.routing.policy.model import hash_key
from gateway.serving.app import PUBLIC_KEYS
from gateway.tools.cli import main
from gateway.tools.standin import Fault, StandIn
from tests.conftest import KEY, Loop, upstream_spec, wait_for, write_policy

if TYPE_CHECKING:
    from tests.redis_server import RedisServer

pytest_plugins = ["tests.redis_server"]
HELLO = [{"role": "user", "content": "Hello"}]


def test_policy_check_accepts_a_good_policy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_policy(tmp_path, {"a": upstream_spec("http://127.0.0.1:1")}, {"chat": {"candidates": ["a"]}})
    assert main(["policy", "check", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"ok: {path} (policy {load_policy(path).hash})")
    assert "upstream a (openai): price from the policy: $1.0000 in, $2.0000 out per Mtok" in out


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


def test_keys_new_prints_a_key_and_the_hash_to_store(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "new", "--tenant", "acme"]) == 0
    out = capsys.readouterr().out
    key = re.search(r"key:  (sk-sy-\S+)", out)
    assert key is not None
    assert len(key.group(1)) >= 38
    assert f"hash: {hash_key(key.group(1))}" in out
    assert f'keys: ["{hash_key(key.group(1))}"]' in out


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn(args: list[str], **variables: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **variables}
    return subprocess.Popen([sys.executable, "-m", "gateway.tools.cli", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)


def ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture
def upstream(loop: Loop) -> tuple[StandIn, str]:
    app = StandIn("primary")
    return app, loop.serve(app).url


def serve(tmp_path: Path, url: str, *extra: str, **variables: str) -> tuple[subprocess.Popen[bytes], int]:
    path = write_policy(tmp_path, {"primary": upstream_spec(url)}, {"chat": {"candidates": ["primary"]}})
    port = free_port()
    process = spawn(["serve", "--policy", str(path), "--port", str(port), "--log-level", "warning", *extra],
                    **variables)
    wait_for(lambda: ready(port) or process.poll() is not None, timeout=30, what="switchyard serve")
    assert process.poll() is None, process.communicate()[0].decode()
    return process, port


def stop(process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=30)
    return process.returncode


def test_serve_with_workers_sums_metrics_over_processes(tmp_path: Path, upstream: tuple[StandIn, str],
                                                         loop: Loop) -> None:
    process, port = serve(tmp_path, upstream[1], "--workers", "2")
    try:
        client = loop.client(f"http://127.0.0.1:{port}/v1")
        for _ in range(20):
            client.chat.completions.create(model="chat", messages=HELLO)
        summed = ('switchyard_requests_total{endpoint="chat",route="chat",status="200",tenant="acme",'
                  'upstream="primary"} 20.0')
        wait_for(lambda: summed in httpx.get(f"http://127.0.0.1:{port}/metrics").text,
                 what="every worker's tally (flushed once a second) in the summed metrics")
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        assert 'switchyard_tokens_total{tenant="acme",type="completion",upstream="primary"} 180.0' in metrics
    finally:
        assert stop(process) == 0


def test_sigterm_lets_an_inflight_request_finish_then_exits(tmp_path: Path, upstream: tuple[StandIn, str]) -> None:
    app, url = upstream
    app.faults.append(Fault(delay_s=1.0))
    process, port = serve(tmp_path, url)
    result: dict[str, object] = {}

    def slow_request() -> None:
        with openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, max_retries=0) as client:
            result["text"] = client.chat.completions.create(model="chat", messages=HELLO).choices[0].message.content

    thread = threading.Thread(target=slow_request)
    thread.start()
    wait_for(lambda: bool(app.seen), what="the request to reach the upstream")
    assert stop(process) == 0
    thread.join(timeout=10)
    assert str(result["text"]).startswith("[primary]")
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/healthz")


def test_serve_refuses_a_broken_policy_before_listening(tmp_path: Path) -> None:
    path = write_policy(tmp_path, {"a": upstream_spec("http://127.0.0.1:1")}, {"chat": {"candidates": ["nope"]}})
    process = spawn(["serve", "--policy", str(path), "--port", str(free_port())])
    output, _ = process.communicate(timeout=30)
    assert process.returncode == 1
    assert "models.chat.candidates[0]: upstream 'nope' is not defined" in output.decode()


# ------------------------------------------------------------------ --version, serve's missing policy, keys, spend

def test_version_prints_the_installed_version(capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.metadata

    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"switchyard {importlib.metadata.version('switchyard')}\n"


def test_serve_without_policies_says_where_it_looked(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]),
                                                         os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "gateway.tools.cli", "serve", "--port", str(free_port())],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"switchyard serve: no policy at {tmp_path / 'policies'}: ")
    assert f"policies/ in the current folder ({tmp_path})" in lines[0]
    assert "--policy FILE_OR_FOLDER" in lines[0]


def test_serve_names_a_policy_path_that_is_not_there(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.yaml"
    assert main(["serve", "--policy", str(missing)]) == 1
    assert capsys.readouterr().err == f"switchyard serve: no policy at {missing} (--policy {missing}): " \
                                      "pass an existing file or folder\n"


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



def answer_to(port: int, request: bytes) -> bytes:
    """What the server sends on a raw connection before it closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return received


def test_serve_takes_its_connection_limits_from_flags_and_the_environment(tmp_path: Path,
                                                                          upstream: tuple[StandIn, str]) -> None:
    process, port = serve(tmp_path, upstream[1], "--max-header-bytes", "2048",
                          SWITCHYARD_HEADER_TIMEOUT_S="0.3")
    try:
        partial = answer_to(port, b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n")
        assert partial.startswith(b"HTTP/1.1 408 Request Timeout")
        assert b"did not arrive within 0.3 s" in partial
        big = answer_to(port, b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nX-Big: " + b"a" * 3000 + b"\r\n\r\n")
        assert big.startswith(b"HTTP/1.1 431 Request Header Fields Too Large")
        assert b"over 2048 bytes" in big
        assert ready(port)
    finally:
        assert stop(process) == 0


def test_serve_refuses_a_negative_limit() -> None:
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--body-timeout-s", "-1"])
    assert exited.value.code == 2


def test_serve_warns_loudly_when_the_policy_accepts_the_public_development_key(
        tmp_path: Path, upstream: tuple[StandIn, str]) -> None:
    path = write_policy(tmp_path, {"primary": upstream_spec(upstream[1])}, {"chat": {"candidates": ["primary"]}},
                        tenants={"dev": {"keys": [hash_key(PUBLIC_KEYS[0])]}})
    port = free_port()
    process = spawn(["serve", "--policy", str(path), "--port", str(port), "--log-level", "warning"])
    wait_for(lambda: ready(port) or process.poll() is not None, timeout=30, what="switchyard serve")
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=30)[0].decode()
    assert process.returncode == 0
    warning = next(orjson.loads(line) for line in output.splitlines() if "PUBLIC DEVELOPMENT KEY" in line)
    assert warning["level"] == "warning"
    assert "tenant 'dev'" in warning["message"]
    assert PUBLIC_KEYS[0] not in output


def test_serve_reads_the_redis_url_from_a_file(tmp_path: Path, upstream: tuple[StandIn, str],
                                               redis_server: RedisServer) -> None:
    url_file = tmp_path / "redis.url"
    url_file.write_text(redis_server.url() + "\n")
    process, port = serve(tmp_path, upstream[1], "--redis-file", str(url_file))
    try:
        assert httpx.get(f"http://127.0.0.1:{port}/readyz").json()["state"]["backend"] == "redis"
    finally:
        assert stop(process) == 0


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


def test_serve_with_workers_refuses_a_metrics_folder_holding_files_it_did_not_write(tmp_path: Path) -> None:
    folder = tmp_path / "metrics"
    folder.mkdir()
    (folder / "precious.txt").write_text("keep me")
    path = write_policy(tmp_path, {"a": upstream_spec("http://127.0.0.1:1")}, {"chat": {"candidates": ["a"]}})
    process = spawn(["serve", "--policy", str(path), "--port", str(free_port()), "--workers", "2"],
                    SWITCHYARD_METRICS_DIR=str(folder))
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 1
    assert "holds files the gateway did not write (precious.txt)" in output.decode()
    assert (folder / "precious.txt").read_text() == "keep me"


def test_policy_check_refuses_a_yaml_alias_bomb_naming_the_file(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from tests.routing.policy.test_loader import alias_bomb

    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb())
    assert main(["policy", "check", str(path)]) == 1
    assert f"{path}: its aliases expand it to more than 200,000 values" in capsys.readouterr().err


def test_audit_verify_refuses_a_short_key_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "audit.key"
    key.write_text("short")
    with pytest.raises(SystemExit):
        main(["audit", "verify", "--key-file", str(key), str(tmp_path / "trail.jsonl")])
    assert "at least 16 bytes" in capsys.readouterr().err
