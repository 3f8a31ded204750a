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

from gateway.app import PUBLIC_KEYS
from gateway.cli import main
from gateway.policy.loader import load_policy
from gateway.policy.model import hash_key
from gateway.standin import Fault, StandIn
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
                     f"{path}: 1 problem(s); the policy was not loaded"]


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
    return subprocess.Popen([sys.executable, "-m", "gateway.cli", *args], env=env, stdout=subprocess.PIPE,
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
        summed = 'switchyard_requests_total{route="chat",status="200",upstream="primary"} 20.0'
        wait_for(lambda: summed in httpx.get(f"http://127.0.0.1:{port}/metrics").text,
                 what="every worker's tally (flushed once a second) in the summed metrics")
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        assert 'switchyard_tokens_total{type="completion",upstream="primary"} 180.0' in metrics
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


def test_demo_routes_by_cost_and_keeps_personal_data_in_house(loop: Loop) -> None:
    from gateway.demo import DEMO_KEY, SELF_PORT, THIRD_PARTY_PORT

    for taken in (SELF_PORT, THIRD_PARTY_PORT, 8080):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", taken)) == 0:
                pytest.skip(f"port {taken} is in use on this machine")
    process = spawn(["demo", "--log-level", "warning"])
    try:
        wait_for(lambda: ready(8080) or process.poll() is not None, timeout=30, what="switchyard demo")
        client = loop.client("http://127.0.0.1:8080/v1", DEMO_KEY)
        cheap = client.chat.completions.with_raw_response.create(model="chat", messages=HELLO)
        assert cheap.headers["x-switchyard-upstream"] == "demo-self-hosted"
        smart = client.chat.completions.with_raw_response.create(model="smart", messages=HELLO)
        assert smart.headers["x-switchyard-upstream"] == "demo-proprietary"
        personal = [{"role": "user", "content": "Write to jane.doe@example.com about her order"}]
        kept = client.chat.completions.with_raw_response.create(model="smart", messages=personal)
        assert kept.headers["x-switchyard-upstream"] == "demo-self-hosted"
        assert kept.headers["x-switchyard-data-class"] == "personal"
        streamed = "".join(c.choices[0].delta.content or "" for c in
                           client.chat.completions.create(model="chat", messages=HELLO, stream=True) if c.choices)
        assert streamed.startswith("[demo self-hosted stand-in]")
    finally:
        assert stop(process) == 0


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
    from tests.policy.test_loader import alias_bomb

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
