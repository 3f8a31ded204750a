"""A client that leaves mid-stream, and an upstream that stalls mid-stream (SIGSTOP of vLLM's process group)."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionChunk

from tests.real.conftest import GENERATE, Vllm
from tests.real.servers import Process
from tests.real.wire import metric, parse_sse, poll

pytestmark = pytest.mark.real

MAX_TOKENS = 480
LONG: dict[str, Any] = {"messages": [{"role": "user", "content": "Tell me a story."}], "max_tokens": MAX_TOKENS,
                        "temperature": 1.0, "extra_body": {"ignore_eos": True}}


# Four choices with 20 logprobs each make 3 MB of events, which vLLM's HTTP server takes over a second to write:
# a stream stopped at its first event is still far from its end.
HEAVY: dict[str, Any] = {**LONG, "n": 4, "logprobs": True, "top_logprobs": 20}


def running(vllm: Vllm) -> float:
    return metric(vllm.generate.url, "vllm:num_requests_running")


def finished(vllm: Vllm) -> float:
    """Requests vLLM finished (stop, length...); a request aborted because its client left is not counted."""
    return metric(vllm.generate.url, "vllm:request_success_total")


def vllm_answered(vllm: Vllm) -> float:
    """Chat requests vLLM's HTTP server has ended its response to (counted by it, whatever the engine does)."""
    return metric(vllm.generate.url, "http_requests_total", handler="/v1/chat/completions")


def generated(vllm: Vllm) -> float:
    return metric(vllm.generate.url, "vllm:generation_tokens_total")


def events(lines: Iterator[str]) -> Iterator[dict[str, Any] | str]:
    """Each data payload of a stream as it arrives, and "[DONE]"."""
    for line in lines:
        if line.startswith("data: "):
            payloads, done = parse_sse(line.encode() + b"\n\n")
            yield from payloads
            if done:
                yield "[DONE]"


def test_client_disconnect_aborts_the_vllm_request(gw: openai.OpenAI, gateway: Process, vllm: Vllm) -> None:
    """The gateway closes its upstream request when its client goes: vLLM drops it and generates no more.

    vLLM's engine is held while the client comes and goes, so the request cannot finish first (the tiny model
    would finish it in about a second); vLLM's HTTP server, running, has begun its stream to the gateway and
    ends it when the gateway closes it. The client leaves before its first event: only then can a test be sure
    vLLM is still at work. Once the engine runs again, a short request sent after it shows the first one gone.
    """
    before = finished(vllm), generated(vllm)
    gone = metric(gateway.url, "switchyard_requests_total", route="chat", status="499")
    answered = vllm_answered(vllm)
    with vllm.generate.engine_held():
        with pytest.raises(openai.APITimeoutError):  # the client gives up and closes its connection
            gw.with_options(timeout=3).chat.completions.create(model="chat", stream=True, **LONG)
        poll(lambda: metric(gateway.url, "switchyard_requests_total", route="chat", status="499") > gone,
             30, "the gateway to count the client's departure (499)")
        assert metric(gateway.url, "switchyard_inflight_requests", upstream="vllm") == 0
        poll(lambda: vllm_answered(vllm) > answered, 30, "vLLM's HTTP server to end its stream to the gateway")
    probe = httpx.post(vllm.generate.url + "/v1/completions", timeout=60,
                       json={"model": GENERATE, "prompt": "hi", "max_tokens": 1})
    assert probe.status_code == 200  # vLLM's engine takes requests in order: the first one has been dealt with
    assert running(vllm) == 0
    assert finished(vllm) == before[0] + 1, "vLLM finished the abandoned request: it never saw the abort"
    assert generated(vllm) - before[1] < MAX_TOKENS


def test_stalled_upstream_ends_the_stream_with_an_error(gw: openai.OpenAI, vllm: Vllm) -> None:
    """vLLM frozen mid-stream: after the route's 2 s idle timeout the client gets an error event, never [DONE]."""
    seen: list[dict[str, Any] | str] = []
    with gw.chat.completions.with_streaming_response.create(model="chat-stall", stream=True, **HEAVY) as response:
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
