"""Structured logs: one JSON object a line, the request id in it, secrets cut out at the sink."""

from __future__ import annotations

import logging
import subprocess
import sys

import orjson
import pytest

from gateway import logs


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
from gateway import logs
logs.configure("info")  # as serve does before it loads the policy
from gateway.upstreams import litellm_adapter  # imports litellm, as a policy with a litellm upstream does
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
