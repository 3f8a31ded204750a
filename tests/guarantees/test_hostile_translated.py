"""A translated upstream (through the litellm adapter) that echoes its key: cut out by the dispatcher's redaction."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from gateway.serving.app import Gateway, Settings
from gateway.tools.standin import FakeAnthropic, Fault
from tests.conftest import KEY, Loop, write_policy
from tests.leaks import leaks
from tests.upstreams.test_litellm_adapter import anthropic_spec

PROVIDER_KEY = "sk-ant-echo-5f4e3d2c1b0a99887766-5544"
AUTH = {"authorization": f"Bearer {KEY}"}


def serve(loop: Loop, tmp_path: Path) -> tuple[FakeAnthropic, str]:
    fake = FakeAnthropic(f"key {PROVIDER_KEY.upper()} and {PROVIDER_KEY}")  # the label is in every answer
    spec = anthropic_spec(loop.serve(fake).url, api_key=PROVIDER_KEY)
    path = write_policy(tmp_path, {"anthropic": spec}, {"chat": {"candidates": ["anthropic"]}})
    return fake, loop.serve(Gateway(Settings(policy=str(path)))).url


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_a_translated_answer_echoing_the_key_is_redacted(loop: Loop, tmp_path: Path, stream: bool) -> None:
    fake, url = serve(loop, tmp_path)
    response = httpx.post(url + "/v1/chat/completions", headers=AUTH, timeout=30,
                          json={"model": "chat", "messages": [{"role": "user", "content": "hi"}], "stream": stream})
    assert response.status_code == 200
    assert fake.seen[-1].headers["x-api-key"] == PROVIDER_KEY
    assert leaks(response.content, PROVIDER_KEY) == []
    assert b"[redacted]" in response.content


def test_a_translated_error_echoing_the_key_is_redacted(loop: Loop, tmp_path: Path) -> None:
    fake, url = serve(loop, tmp_path)
    fake.faults.append(Fault(status=400, message=f"invalid x-api-key {PROVIDER_KEY[:12]}..."))
    response = httpx.post(url + "/v1/chat/completions", headers=AUTH, timeout=30,
                          json={"model": "chat", "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 400
    assert leaks(response.content, PROVIDER_KEY) == []
    assert b"[redacted]" in response.content
