"""Streams that break after bytes went out: continued seamlessly where an upstream can, never faked whole."""

from __future__ import annotations

from pathlib import Path

import httpx
import orjson

from gateway.standin import Fault
from tests.conftest import KEY, Loop, Stack, start_stack

HELLO = [{"role": "user", "content": "Tell me a story"}]
WHOLE = "[primary] " + " ".join(f"word{i}" for i in range(8)) + " "


def stream(stack: Stack, **extra: object) -> tuple[list[dict[str, object]], bytes]:
    with httpx.stream("POST", stack.base_url + "/chat/completions", headers={"authorization": f"Bearer {KEY}"},
                      json={"model": "chat", "messages": HELLO, "stream": True, **extra}, timeout=20) as response:
        raw = response.read()
    events = [orjson.loads(line[6:]) for line in raw.split(b"\n\n") if line.startswith(b"data: {")]
    return events, raw


def text_of(events: list[dict[str, object]]) -> str:
    return "".join(e["choices"][0]["delta"].get("content") or "" for e in events  # type: ignore[index,union-attr]
                   if e.get("choices"))


def continuing(loop: Loop, tmp_path: Path, **capabilities: list[str]) -> Stack:
    extra = {f"upstream_{name}": {"capabilities": caps} for name, caps in capabilities.items()}
    return start_stack(loop, tmp_path, **extra)


def test_a_cut_stream_is_continued_by_the_same_upstream(loop: Loop, tmp_path: Path) -> None:
    stack = continuing(loop, tmp_path, primary=["continuation"])
    stack.upstreams["primary"].faults.append(Fault(cut_after=4))
    events, raw = stream(stack)
    assert text_of(events) == WHOLE
    assert raw.endswith(b"data: [DONE]\n\n")
    assert raw.count(b"[DONE]") == 1
    second = stack.upstreams["primary"].seen[1].body
    assert second["continue_final_message"] is True
    assert second["messages"][-1] == {"role": "assistant", "content": "[primary] word0 word1 word2 "}
    assert sum(1 for e in events if e.get("choices") and e["choices"][0]["delta"].get("role")) == 1  # type: ignore


def test_continuation_moves_to_the_next_candidate_that_declares_it(loop: Loop, tmp_path: Path) -> None:
    stack = continuing(loop, tmp_path, primary=["continuation"], fallback=["continuation"])
    stack.upstreams["primary"].faults.extend([Fault(cut_after=4), Fault(status=503)])
    events, raw = stream(stack, stream_options={"include_usage": True})
    assert text_of(events).startswith("[primary] word0 word1 word2 (continued by fallback)")
    assert raw.endswith(b"data: [DONE]\n\n")
    usage = events[-1]["usage"]
    # the cut part estimated from its text, a token per 4 bytes ("[primary] " 3, "wordN " 2 each); the rest reported
    assert usage["completion_tokens"] == 3 + 3 * 2 + 3  # type: ignore[index]
    metrics = httpx.get(stack.served.url + "/metrics").text
    assert 'switchyard_stream_failures_total{outcome="continued",reason="connect",upstream="primary"} 1.0' in metrics


def test_no_continuation_goes_to_an_upstream_that_does_not_declare_it(loop: Loop, tmp_path: Path) -> None:
    stack = continuing(loop, tmp_path, primary=["continuation"])
    stack.upstreams["primary"].faults.extend([Fault(cut_after=4), Fault(status=503)])
    events, raw = stream(stack)
    assert b"[DONE]" not in raw
    assert events[-1]["error"]["code"] == "stream_interrupted"  # type: ignore[index]
    assert stack.upstreams["fallback"].seen == []
    assert not any(e.get("choices") and e["choices"][0].get("finish_reason") for e in events)  # type: ignore


def test_without_continuation_a_cut_ends_in_an_error_event(stack: Stack) -> None:
    stack.upstreams["primary"].faults.append(Fault(cut_after=4))
    events, raw = stream(stack)
    assert text_of(events) == "[primary] word0 word1 word2 "
    assert b"[DONE]" not in raw
    assert events[-1]["error"]["code"] == "stream_interrupted"  # type: ignore[index]
    assert len(stack.upstreams["primary"].seen) == 1
