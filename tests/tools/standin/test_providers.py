"""The Anthropic and Gemini fakes on loopback, spoken to in their own wire formats."""

from __future__ import annotations

import httpx
import orjson

from gateway.tools.standin import FakeAnthropic, FakeGemini, Fault
from tests.conftest import Loop

ANTHROPIC = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
MESSAGE = {"model": "claude", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
GEMINI = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}


def test_anthropic_answers_with_its_label_and_asks_for_a_key(loop: Loop) -> None:
    fake = FakeAnthropic("claude-fake", words=2)
    url = loop.serve(fake).url + "/v1/messages"
    answer = httpx.post(url, json=MESSAGE, headers=ANTHROPIC, timeout=10).json()
    assert answer["content"] == [{"type": "text", "text": "[claude-fake] word0 word1 "}]
    assert answer["stop_reason"] == "end_turn"
    refused = httpx.post(url, json=MESSAGE, timeout=10)
    assert (refused.status_code, refused.json()["error"]["type"]) == (401, "authentication_error")
    assert fake.seen[0].headers["x-api-key"] == "k"


def test_anthropic_faults_and_too_long_prompts_are_its_own_errors(loop: Loop) -> None:
    fake = FakeAnthropic("claude-fake", context_limit=50)
    fake.faults.append(Fault(status=429, retry_after="4"))
    url = loop.serve(fake).url + "/v1/messages"
    limited = httpx.post(url, json=MESSAGE, headers=ANTHROPIC, timeout=10)
    assert (limited.status_code, limited.headers["retry-after"]) == (429, "4")
    assert limited.json() == {"type": "error", "error": {"type": "rate_limit_error",
                                                         "message": "claude-fake: rate_limit_error"}}
    too_long = httpx.post(url, json=MESSAGE, headers=ANTHROPIC, timeout=10)
    assert too_long.status_code == 400
    assert too_long.json()["error"]["message"].startswith("prompt is too long")


def test_an_anthropic_stream_runs_from_message_start_to_message_stop(loop: Loop) -> None:
    url = loop.serve(FakeAnthropic("claude-fake", words=1)).url + "/v1/messages"
    raw = httpx.post(url, json={**MESSAGE, "stream": True}, headers=ANTHROPIC, timeout=10).content
    kinds = [e.split(b"\n")[0].removeprefix(b"event: ").decode() for e in raw.split(b"\n\n") if e]
    assert kinds == ["message_start", "content_block_start", "ping", "content_block_delta", "content_block_delta",
                     "content_block_stop", "message_delta", "message_stop"]


def test_gemini_answers_generate_content_with_a_key_and_refuses_other_paths(loop: Loop) -> None:
    fake = FakeGemini("gemini-fake", words=1)
    base = loop.serve(fake).url + "/v1beta/models/gem"
    answer = httpx.post(base + ":generateContent", json=GEMINI, headers={"x-goog-api-key": "k"}, timeout=10).json()
    assert answer["candidates"][0]["content"]["parts"] == [{"text": "[gemini-fake] word0 "}]
    assert answer["candidates"][0]["finishReason"] == "STOP"
    assert httpx.post(base + ":generateContent", json=GEMINI, timeout=10).status_code == 401
    assert httpx.post(base + ":countTokens?key=k", json=GEMINI, timeout=10).json()["error"]["status"] == "NOT_FOUND"


def test_a_gemini_stream_is_sse_only_with_alt_sse(loop: Loop) -> None:
    fake = FakeGemini("gemini-fake", words=2)
    base = loop.serve(fake).url + "/v1beta/models/gem:streamGenerateContent"
    assert httpx.post(base + "?key=k", json=GEMINI, timeout=10).status_code == 400
    raw = httpx.post(base + "?alt=sse&key=k", json=GEMINI, timeout=10).content
    chunks = [orjson.loads(e[6:]) for e in raw.split(b"\r\n\r\n") if e]
    assert "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks) == "[gemini-fake] word0 word1 "
    assert fake.seen[-1].query == "alt=sse&key=k"
