"""`switchyard serve` as a real process: workers, drain on SIGTERM, connection limits, policy and Redis checks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import openai
import orjson
import pytest

from gateway.routing.policy.model import hash_key
from gateway.serving.app import PUBLIC_KEYS
from gateway.tools.cli import main
from gateway.tools.standin import Fault, StandIn
from tests.conftest import KEY, Loop, upstream_spec, wait_for, write_policy
from tests.tools.cli.helpers import HELLO, answer_to, free_port, ready, serve, spawn, stop, upstream

if TYPE_CHECKING:
    from tests.redis_server import RedisServer

__all__ = ["upstream"]  # the stand-in fixture from helpers
pytest_plugins = ["tests.redis_server"]


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
