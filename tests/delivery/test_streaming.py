"""Streams that break after bytes went out: continued seamlessly where an upstream can, never faked whole."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from openai.types.chat import ChatCompletionChunk

from gateway.tools.standin import Fault, Sse, event
from tests.conftest import KEY, Loop, Stack, start_stack
from tests.guarantees.rig import Faults, rig

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
    assert 'switchyard_stream_failures_total{outcome="continued",reason="cut",upstream="primary"} 1.0' in metrics


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


# Events of real servers' shapes: vLLM puts system_fingerprint on the usage chunk only, llama.cpp adds timings there

@pytest.fixture
def faults(loop: Loop) -> Iterator[Faults]:
    made = Faults(loop)
    yield made
    made.stop()


def answer(base: dict[str, Any], words: list[str], role: bool = True, **usage_extra: Any) -> tuple[bytes, ...]:
    """An answer as a server of base's identity streams it: role, words, finish_reason, usage with usage_extra."""
    delta: list[dict[str, Any]] = [{"role": "assistant", "content": ""}] if role else []
    events = [event({**base, "choices": [{"index": 0, "delta": d, "finish_reason": None}]})
              for d in [*delta, *({"content": w} for w in words)]]
    events.append(event({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
    usage = {"prompt_tokens": 7, "completion_tokens": len(words), "total_tokens": 7 + len(words)}
    return (*events, event({**base, "choices": [], "usage": usage, **usage_extra}))


def chunks_of(raw: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(e[6:]) for e in raw.split(b"\n\n") if e.startswith(b"data: {")]


def raw_stream(base_url: str, **extra: object) -> bytes:
    with httpx.stream("POST", base_url + "/chat/completions", headers={"authorization": f"Bearer {KEY}"}, timeout=20,
                      json={"model": "chat", "messages": HELLO, "stream": True, **extra}) as response:
        assert response.status_code == 200, response.read()
        return response.read()


FIRST = {"id": "chatcmpl-first", "object": "chat.completion.chunk", "created": 1000, "model": "primary-model"}
SECOND = {"id": "chatcmpl-second", "object": "chat.completion.chunk", "created": 2000, "model": "fallback-model"}
SAID = [f"said{i} " for i in range(4)]
REST = [f"rest{i} " for i in range(4)]


@pytest.mark.parametrize("usage", [True, False], ids=["usage-asked", "usage-not-asked"])
def test_a_continued_stream_reads_as_one_completion(loop: Loop, tmp_path: Path, faults: Faults, usage: bool) -> None:
    primary = faults("primary", Sse(answer(FIRST, SAID), cut_after=1 + len(SAID)))
    fallback = faults("fallback", default=Sse(answer(SECOND, REST, role=False, system_fingerprint="fp_fallback")))
    r = rig(loop, tmp_path, {"primary": primary, "fallback": fallback}, continuation=("fallback",))
    raw = raw_stream(r.base_url, **({"stream_options": {"include_usage": True}} if usage else {}))
    chunks = chunks_of(raw)
    assert raw.endswith(b"data: [DONE]\n\n")
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == "".join(
        SAID + REST)
    for chunk in chunks:
        ChatCompletionChunk.model_validate(chunk)
        assert (chunk["id"], chunk["created"], chunk["model"]) == ("chatcmpl-first", 1000, "primary-model")
    summed = [c for c in chunks if c.get("usage")]
    if usage:
        assert summed == [{**FIRST, "system_fingerprint": "fp_fallback", "choices": [], "usage": {
            "prompt_tokens": summed[0]["usage"]["prompt_tokens"], "completion_tokens": 4 * 2 + 4,
            "total_tokens": summed[0]["usage"]["prompt_tokens"] + 4 * 2 + 4}}]
    else:
        assert summed == []
        assert chunks[-1]["system_fingerprint"] == "fp_fallback"  # carried onto the finishing chunk


SERVERS = {
    "vllm": {"system_fingerprint": "fp_vllm"},
    "llama.cpp": {"system_fingerprint": "b6001-abc", "timings": {"prompt_n": 7, "predicted_n": 4,
                                                                 "predicted_per_second": 41.5}},
}


@pytest.mark.parametrize("reads", ["one-read", "apart"])
@pytest.mark.parametrize("server", list(SERVERS))
def test_a_stripped_usage_event_leaves_what_else_it_held_on_the_finishing_chunk(
        loop: Loop, tmp_path: Path, faults: Faults, server: str, reads: str) -> None:
    events = answer(FIRST, SAID, **SERVERS[server])
    delays = (0.0,) * (len(events) - 1) + (0.2,)  # apart: the usage event comes in a later read than finish_reason
    primary = faults("primary", default=Sse(events, together=reads == "one-read", delays=delays))
    r = rig(loop, tmp_path, {"primary": primary})
    raw = raw_stream(r.base_url)
    chunks = chunks_of(raw)
    assert raw.endswith(b"data: [DONE]\n\n")
    assert all(c["choices"] for c in chunks)  # no usage chunk the client did not ask for
    finishing = chunks[-1]
    assert finishing["choices"][0]["finish_reason"] == "stop"
    assert {k: finishing[k] for k in SERVERS[server]} == SERVERS[server]
    assert "usage" not in finishing
    for chunk in chunks:
        ChatCompletionChunk.model_validate(chunk)


WRONG_TYPES = [
    pytest.param({"choices": [{"index": 0, "delta": "a string", "finish_reason": None}]}, id="delta-string"),
    pytest.param({"choices": [{"index": 0, "delta": ["a", "list"], "finish_reason": None}]}, id="delta-list"),
    pytest.param({"choices": [{"index": 0, "delta": {"content": 5}, "finish_reason": None}]}, id="content-number"),
    pytest.param({"choices": [{"index": 0, "delta": {"content": {"x": 1}}, "finish_reason": None}]},
                 id="content-object"),
    pytest.param({"choices": "a string"}, id="choices-string"),
]


@pytest.mark.parametrize("position", [0, 3], ids=["first-event", "mid-stream"])
@pytest.mark.parametrize("wrong", WRONG_TYPES)
def test_an_event_of_the_wrong_types_is_a_malformed_upstream_event_not_a_500(
        loop: Loop, tmp_path: Path, faults: Faults, wrong: dict[str, Any], position: int) -> None:
    events = list(answer(FIRST, SAID))
    events.insert(position, event({**FIRST, **wrong}))
    primary = faults("primary", default=Sse(tuple(events)))
    r = rig(loop, tmp_path, {"primary": primary}, continuation=("primary",))
    raw = raw_stream(r.base_url)
    chunks = chunks_of(raw)
    assert raw.endswith(b"data: [DONE]\n\n")
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == "".join(SAID)
    for chunk in chunks:
        ChatCompletionChunk.model_validate(chunk)
    assert r.metric("switchyard_upstream_errors_total", upstream="primary", reason="malformed_event") == 1


def _line_ends(events: tuple[bytes, ...], end: bytes) -> tuple[bytes, ...]:
    return tuple(e.replace(b"\n", end) for e in events)


@pytest.mark.parametrize("end", [b"\r\n", b"\r"], ids=["crlf", "cr"])
def test_a_stream_whose_lines_end_in_cr_is_relayed_event_by_event(loop: Loop, tmp_path: Path, faults: Faults,
                                                                    end: bytes) -> None:
    events = _line_ends(answer(FIRST, SAID), end)
    # the first event's line end split across two writes: b"\r" in one read, b"\n" in the next
    split = (events[0][:-1], events[0][-1:], *events[1:]) if end == b"\r\n" else events
    primary = faults("primary", Sse(split, delays=(0, 0.05)))
    made = rig(loop, tmp_path, {"primary": primary})
    raw = raw_stream(made.base_url)
    assert text_of(chunks_of(raw)) == "".join(SAID)
    assert b"\r" not in raw
    assert raw.endswith(b"data: [DONE]\n\n")
