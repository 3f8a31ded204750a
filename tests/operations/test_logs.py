"""Structured logs: one JSON object a line, the request id in it, secrets cut out at the sink."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from gateway.operations import logs
from gateway.routing.policy.loader import load_policy
from gateway.tools.demo import DEMO_KEY
from gateway.tools.standin import StandIn
from tests.conftest import Loop, upstream_spec, wait_for, write_policy
from tests.tools.cli.helpers import HELLO, free_port, ready, spawn, upstream

__all__ = ["upstream"]  # the stand-in fixture, shared with tests.tools.cli


@pytest.mark.parametrize(("text", "leaked"), [
    ("upstream said: Incorrect API key provided: sk-proj-abcdef123456", "sk-proj-abcdef123456"),
    ("Authorization: Bearer sk-sy-test-0123456789", "sk-sy-test-0123456789"),
    ("authorization: bearer anything-at-all", "anything-at-all"),
    ("gemini key AIzaSyA1234567890abcdefghijklmnop", "AIzaSyA1234567890abcdefghijklmnop"),
    ("the policy key is hunter2-provider", "hunter2-provider"),
])
def test_the_redactor_cuts_secrets(text: str, leaked: str) -> None:
    redacted = logs.Redactor(["hunter2-provider"])(text)
    assert leaked not in redacted
    assert "[redacted]" in redacted


def test_a_log_line_is_json_with_the_request_id() -> None:
    formatter = logs.JsonFormatter(logs.Redactor(["sk-secret-provider"]))
    record = logging.LogRecord("switchyard.test", logging.WARNING, __file__, 1, "upstream %s refused key %s",
                               ("gpt", "sk-secret-provider"), None)
    token = logs.request_id.set("req-123")
    try:
        entry = orjson.loads(formatter.format(record))
    finally:
        logs.request_id.reset(token)
    assert entry["request_id"] == "req-123"
    assert entry["level"] == "warning"
    assert entry["message"] == "upstream gpt refused key [redacted]"
    assert entry["time"].endswith("Z")


LITELLM_AFTER_START = """
import logging
import subprocess
import sys
from gateway.operations import logs
logs.configure("info")  # as serve does before it loads the policy
from gateway.upstreams import litellm_adapter
litellm_adapter.import_litellm()  # as building a policy's litellm upstream does
logs.configure("info", ["provider-secret-0123"])  # once the policy's keys are known
logging.getLogger("LiteLLM").warning("litellm: the upstream refused key provider-secret-0123")
logging.getLogger("LiteLLM Router").warning("router: Authorization: Bearer sk-ant-0123456789")
"""


def test_litellm_s_own_log_lines_come_out_as_json_and_redacted() -> None:
    # in a process of its own: configuring logs here would change the rest of the suite's
    result = subprocess.run([sys.executable, "-c", LITELLM_AFTER_START], capture_output=True, text=True, check=True,
                            timeout=120)
    lines = [orjson.loads(line) for line in result.stderr.splitlines()]
    assert [entry["logger"] for entry in lines] == ["LiteLLM", "LiteLLM Router"]
    assert "provider-secret-0123" not in result.stderr + result.stdout
    assert "sk-ant-0123456789" not in result.stderr + result.stdout
    assert lines[0]["message"] == "litellm: the upstream refused key [redacted]"


# --- a whole `switchyard serve`, every line of its output --------------------------------------------------------


def served_lines(tmp_path: Path, upstream_url: str, loop: Loop, *extra: str) -> tuple[list[dict[str, Any]], Path]:
    """Every line `switchyard serve` wrote (stdout and stderr) while it answered a few requests, parsed as JSON."""
    path = write_policy(tmp_path, {"primary": upstream_spec(upstream_url)}, {"chat": {"candidates": ["primary"]}})
    port = free_port()
    process = spawn(["serve", "--policy", str(path), "--port", str(port), *extra])
    try:
        wait_for(lambda: ready(port) or process.poll() is not None, timeout=30, what="switchyard serve")
        client = loop.client(f"http://127.0.0.1:{port}/v1")
        for _ in range(4):
            client.chat.completions.create(model="chat", messages=HELLO)
        httpx.get(f"http://127.0.0.1:{port}/v1/nothing")
        httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json={})
    finally:
        process.send_signal(signal.SIGTERM)
        out = process.communicate(timeout=30)[0].decode()
    assert process.returncode == 0, out
    lines = out.splitlines()
    assert lines
    parsed = []
    for line in lines:
        entry = orjson.loads(line)  # fails the test on any line that is not JSON
        assert isinstance(entry, dict), line
        parsed.append(entry)
    return parsed, path


def test_every_line_of_serve_with_workers_is_json_once_per_process(tmp_path: Path, upstream: tuple[StandIn, str],
                                                                   loop: Loop) -> None:
    entries, path = served_lines(tmp_path, upstream[1], loop, "--workers", "2")
    assert {e["level"] for e in entries} <= {"info", "warning"}
    assert not [e for e in entries if e["logger"] in ("uvicorn.access", "py.warnings")]
    serving = [e for e in entries if e["message"].startswith("serving policy")]
    hash_ = load_policy(str(path)).hash
    assert len(serving) == 2
    assert len({e["pid"] for e in serving}) == 2  # each worker, once
    for entry in serving:
        assert entry["message"] == f"serving policy {path} (hash {hash_})"
    seen = [(e["pid"], e["message"]) for e in entries]
    assert len(seen) == len(set(seen)), "a line came out twice in one process"
    assert sum(1 for e in entries if e["message"].startswith("Started server process")) == 2


def test_access_lines_come_only_when_asked_and_as_json(tmp_path: Path, upstream: tuple[StandIn, str],
                                                       loop: Loop) -> None:
    entries, _ = served_lines(tmp_path, upstream[1], loop, "--access-log")
    access = [e for e in entries if e["logger"] == "uvicorn.access"]
    assert len([e for e in access if "/readyz" not in e["message"]]) == 6  # readyz: polled until it was up
    assert all(e["request_id"] for e in access)
    assert sum(1 for e in access if '"POST /v1/chat/completions HTTP/1.1" 200' in e["message"]) == 4


def test_every_line_the_demo_logs_is_json_once(loop: Loop) -> None:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "gateway.tools.cli", "demo", "--port", str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        wait_for(lambda: ready(port) or process.poll() is not None, timeout=30, what="switchyard demo")
        loop.client(f"http://127.0.0.1:{port}/v1", DEMO_KEY).chat.completions.create(model="chat", messages=HELLO)
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    assert b"Switchyard demo" in out  # the banner, for people, on stdout
    entries = [orjson.loads(line) for line in err.decode().splitlines()]
    seen = [(e["pid"], e["message"]) for e in entries]
    assert len(seen) == len(set(seen)), "a line came out twice"
    assert sum(1 for e in entries if e["message"].startswith("serving policy")) == 1
