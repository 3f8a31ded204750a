"""A client that leaves mid-stream, and an upstream that stalls mid-stream (SIGSTOP of vLLM's process group)."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionChunk

from tests.real.conftest import Vllm
from tests.real.wire import metric, parse_sse, poll

pytestmark = pytest.mark.real

# Long enough (about 1-2 s of generation here) that the test acts while vLLM is still generating.
LONG: dict[str, Any] = {"messages": [{"role": "user", "content": "Tell me a story."}], "max_tokens": 480, "n": 4,
                        "temperature": 1.0, "logprobs": True, "top_logprobs": 20, "extra_body": {"ignore_eos": True}}


def running(vllm: Vllm) -> float:
    return metric(vllm.generate.url, "vllm:num_requests_running")


def aborted(vllm: Vllm) -> float:
    return metric(vllm.generate.url, "vllm:request_success_total", finished_reason="abort")


def events(lines: Iterator[str]) -> Iterator[dict[str, Any] | str]:
    """Each data payload of a stream as it arrives, and "[DONE]"."""
    for line in lines:
        if line.startswith("data: "):
            payloads, done = parse_sse(line.encode() + b"\n\n")
            yield from payloads
            if done:
                yield "[DONE]"


def test_client_disconnect_aborts_the_vllm_request(gw: openai.OpenAI, vllm: Vllm) -> None:
    """The gateway closes its upstream request when its client goes: vLLM counts an abort and stops generating."""
    before = aborted(vllm)
    with gw.chat.completions.with_streaming_response.create(model="chat", stream=True, **LONG) as response:
        assert response.status_code == 200
        first = next(events(response.iter_lines()))
        assert isinstance(first, dict)
        ChatCompletionChunk.model_validate(first)
        assert running(vllm) >= 1, "vLLM finished before the client left: the test could not disconnect mid-stream"
    poll(lambda: aborted(vllm) > before, 30, "vLLM to count the abort")
    poll(lambda: running(vllm) == 0, 30, "vllm:num_requests_running to fall back to 0")


def test_stalled_upstream_ends_the_stream_with_an_error(gw: openai.OpenAI, vllm: Vllm) -> None:
    """vLLM frozen mid-stream: after the route's 2 s idle timeout the client gets an error event, never [DONE]."""
    seen: list[dict[str, Any] | str] = []
    with gw.chat.completions.with_streaming_response.create(model="chat-stall", stream=True, **LONG) as response:
        stream = events(response.iter_lines())
        seen.append(next(stream))
        vllm.generate.signal(signal.SIGSTOP)
        try:
            seen.extend(stream)  # ends when the gateway gives up on the silent upstream
        finally:
            vllm.generate.signal(signal.SIGCONT)
    assert "[DONE]" not in seen
    last = seen[-1]
    assert isinstance(last, dict), last
    assert set(last) == {"error"}, last
    assert last["error"]["code"] == "stream_interrupted"
    for payload in seen[:-1]:
        assert isinstance(payload, dict)
        ChatCompletionChunk.model_validate(payload)
    vllm.generate.wait_healthy(60)
    poll(lambda: running(vllm) == 0, 60, "vLLM to drop the request the gateway gave up on")
    again = gw.chat.completions.with_raw_response.create(model="chat-stall", messages=LONG["messages"], max_tokens=4)
    assert again.status_code == 200  # one stall does not take the upstream out of rotation
