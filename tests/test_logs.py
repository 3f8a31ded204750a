"""Structured logs: one JSON object a line, the request id in it, secrets cut out at the sink."""

from __future__ import annotations

import logging

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
