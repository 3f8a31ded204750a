"""Provider answers in OpenAI's wire format: Anthropic's and Gemini's events as chunks, litellm's answers as JSON."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import orjson
import pytest

from gateway.errors import UpstreamCut, UpstreamTooLarge, UpstreamUnavailable
from gateway.upstreams.spec import Limits
from gateway.upstreams.translate import DONE, AnthropicFrames, Frames, GeminiFrames, completion_body, translated


def chunks(out: bytes) -> list[Any]:
    return [json.loads(line[6:]) for line in out.decode().split("\n\n") if line.startswith("data: {")]


def test_anthropic_frames_read_thinking_and_the_json_tool_as_litellm_does() -> None:
    frames = AnthropicFrames("up", "claude", True, "json_tool_call", {"get_weather_v2": "get/weather"})
    out = frames.event({"type": "message_start", "message": {"id": "msg_1", "model": "claude",
                                                             "usage": {"input_tokens": 5, "output_tokens": 1,
                                                                       "cache_read_input_tokens": 3}}})
    out += frames.event({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking"}})
    out += frames.event({"type": "content_block_delta", "index": 0,
                         "delta": {"type": "thinking_delta", "thinking": "hmm"}})
    out += frames.event({"type": "content_block_start", "index": 1,
                         "content_block": {"type": "tool_use", "id": "t1", "name": "json_tool_call"}})
    out += frames.event({"type": "content_block_delta", "index": 1,
                         "delta": {"type": "input_json_delta", "partial_json": '{"a":1}'}})
    out += frames.event({"type": "content_block_start", "index": 2,
                         "content_block": {"type": "tool_use", "id": "t2", "name": "get_weather_v2"}})
    out += frames.event({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 7}})
    out += frames.event({"type": "message_stop"})
    events = [json.loads(line[6:]) for line in out.decode().split("\n\n") if line.startswith("data: {")]
    deltas = [e["choices"][0]["delta"] for e in events if e["choices"]]
    assert deltas[1] == {"reasoning_content": "hmm"}
    assert deltas[2] == {"content": '{"a":1}'}
    assert deltas[3]["tool_calls"][0]["function"]["name"] == "get/weather"
    assert events[-1]["usage"] == {"prompt_tokens": 8, "completion_tokens": 7, "total_tokens": 15,
                                   "prompt_tokens_details": {"cached_tokens": 3}}
    assert out.endswith(b"data: [DONE]\n\n")
    with pytest.raises(UpstreamUnavailable):
        frames.event({"type": "error", "error": {"type": "overloaded_error"}})


def test_anthropic_cache_writes_reach_the_usage_event_as_litellm_names_them() -> None:
    frames = AnthropicFrames("up", "claude", True, None, {})
    usage = {"input_tokens": 5, "output_tokens": 1, "cache_read_input_tokens": 3, "cache_creation_input_tokens": 40}
    out = frames.event({"type": "message_start", "message": {"id": "msg_1", "model": "claude", "usage": usage}})
    out += frames.event({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi"}})
    out += frames.event({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 2}})
    out += frames.event({"type": "message_stop"})
    assert chunks(out)[-1]["usage"] == {"prompt_tokens": 48, "completion_tokens": 2, "total_tokens": 50,
                                        "prompt_tokens_details": {"cached_tokens": 3, "cache_creation_tokens": 40}}


def test_anthropic_finish_reasons_map_to_openais() -> None:
    for stop, reason in (("max_tokens", "length"), ("refusal", "content_filter"), ("end_turn", "stop"),
                         ("something_new", "stop")):
        frames = AnthropicFrames("up", "claude", False, None, {})
        out = frames.event({"type": "message_start", "message": {"id": "msg_1", "model": ""}})
        out += frames.event({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi"}})
        out += frames.event({"type": "message_delta", "delta": {"stop_reason": stop}})
        out += frames.event({"type": "ping"})
        out += frames.event({"type": "message_stop"})
        events = chunks(out)
        assert [e["choices"][0]["finish_reason"] for e in events] == [None, None, reason], stop
        assert events[0]["model"] == "claude"  # the upstream's model when the provider names none
        assert out.endswith(DONE)
        assert all(e["id"] == "msg_1" for e in events)


def test_an_anthropic_error_event_is_a_cut() -> None:
    frames = AnthropicFrames("up", "claude", True, None, {})
    with pytest.raises(UpstreamCut, match="up: cut: stream error: overloaded_error"):
        frames.event({"type": "error", "error": {"type": "overloaded_error"}})


def gemini(**extra: Any) -> GeminiFrames:
    return GeminiFrames("up", "gemini-pro", True, lambda call_id, signature: f"{call_id}|{signature}", **extra)


def test_gemini_text_thoughts_and_a_call_stream_as_chunks_with_usage_at_the_end() -> None:
    frames = gemini()
    out = frames.event({"responseId": "r1", "modelVersion": "gemini-2", "candidates": [{"content": {"parts": [
        {"text": "let me see", "thought": True}, {"text": "Hello"}]}}]})
    out += frames.event({"candidates": [{"content": {"parts": [
        {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}, "thoughtSignature": "sig"}]},
        "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 6, "thoughtsTokenCount": 2,
                          "cachedContentTokenCount": 1}})
    out += frames.end()
    events = chunks(out)
    deltas = [e["choices"][0]["delta"] for e in events if e["choices"]]
    assert deltas[:3] == [{"role": "assistant", "content": ""}, {"reasoning_content": "let me see"},
                          {"content": "Hello"}]
    [call] = deltas[3]["tool_calls"]
    assert call["function"] == {"name": "get_weather", "arguments": '{"city":"Oslo"}'}
    assert call["id"].startswith("call_")
    assert call["id"].endswith("|sig")  # the thought signature rides in the call id, for the next turn
    assert events[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert events[-1]["usage"] == {"prompt_tokens": 4, "completion_tokens": 8, "total_tokens": 12,
                                   "prompt_tokens_details": {"cached_tokens": 1}}
    assert {e["model"] for e in events} == {"gemini-2"}
    assert out.endswith(DONE)


@pytest.mark.parametrize(("reason", "expected"), [("SAFETY", "content_filter"), ("MAX_TOKENS", "length"),
                                                  ("STOP", "stop")])
def test_gemini_finish_reasons_map_to_openais(reason: str, expected: str) -> None:
    frames = gemini()
    out = frames.event({"candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": reason}]})
    assert chunks(out)[-1]["choices"][0]["finish_reason"] == expected


def test_a_gemini_prompt_blocked_finishes_filtered_and_a_body_that_never_finished_sends_no_done() -> None:
    blocked = gemini()
    out = blocked.event({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}})
    assert chunks(out)[-1]["choices"][0]["finish_reason"] == "content_filter"
    unfinished = gemini()
    unfinished.event({"candidates": [{"content": {"parts": [{"text": "half"}]}}]})
    assert unfinished.end() == b""


def test_without_include_usage_the_ending_is_only_done() -> None:
    frames = Frames("up", "m", include_usage=False)
    frames.start("id", "m")
    assert frames.ending(3, 4) == DONE
    assert Frames("up", "m", include_usage=False).end() == b""


def translate_body(body: bytes, frames: Frames, limits: Limits | None = None) -> bytes:
    async def run() -> bytes:
        response = httpx.Response(200, content=body)
        return b"".join([piece async for piece in translated(response, frames, limits or Limits())])

    return asyncio.run(run())


def test_translated_reads_a_providers_sse_body_into_openai_events() -> None:
    events = [{"candidates": [{"content": {"parts": [{"text": "Hi"}]}, "finishReason": "STOP"}],
               "usageMetadata": {"promptTokenCount": 2, "candidatesTokenCount": 1}}]
    body = b"".join(b"data: " + orjson.dumps(e) + b"\r\n\r\n" for e in events)
    out = translate_body(body, gemini())
    assert [e["choices"][0]["delta"].get("content") for e in chunks(out) if e["choices"]] == ["", "Hi", None]
    assert chunks(out)[-1]["usage"]["total_tokens"] == 3
    assert out.endswith(DONE)


@pytest.mark.parametrize(("limits", "reason"), [(Limits(sse_event_bytes=1024), "event_too_large"),
                                                (Limits(body_bytes=2048), "body_too_large")])
def test_translated_refuses_an_event_or_a_body_over_its_limit(limits: Limits, reason: str) -> None:
    first = b"data: " + orjson.dumps({"candidates": [{"content": {"parts": [{"text": "Hi"}]}}]}) + b"\n\n"
    with pytest.raises(UpstreamTooLarge) as caught:
        translate_body(first + b"data: " + b"x" * 5000, gemini(), limits)  # an event that never ends
    assert caught.value.reason == reason


class Dumped:
    """What litellm hands back for a whole answer: an object with model_dump."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    def model_dump(self) -> dict[str, Any]:
        return self.data


def test_completion_body_is_openais_chat_completion_without_litellms_extra_fields() -> None:
    response = Dumped({
        "id": "chatcmpl-1", "created": 7, "model": "claude", "object": "chat.completion", "system_fingerprint": None,
        "choices": [{"index": 0, "finish_reason": "tool_calls", "provider_specific_fields": {"x": 1},
                     "message": {"role": "assistant", "content": None, "reasoning_content": "hmm",
                                 "tool_calls": [{"id": "t1", "type": "function", "index": 0,
                                                 "function": {"name": "f", "arguments": None}}]}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5, "completion_tokens_details": None,
                  "prompt_tokens_details": {"cached_tokens": 1}}})
    body = orjson.loads(completion_body(response))
    assert body == {
        "id": "chatcmpl-1", "object": "chat.completion", "created": 7, "model": "claude",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "logprobs": None,
                     "message": {"role": "assistant", "content": None, "refusal": None, "reasoning_content": "hmm",
                                 "tool_calls": [{"id": "t1", "type": "function",
                                                 "function": {"name": "f", "arguments": ""}}]}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5,
                  "prompt_tokens_details": {"cached_tokens": 1}}}


@pytest.mark.parametrize("details", [{"cached_tokens": 1, "cache_creation_tokens": 40, "cache_write_tokens": 40},
                                     {"cached_tokens": 1, "cache_write_tokens": 40}])
def test_completion_body_keeps_litellms_cache_writes(details: dict[str, Any]) -> None:
    usage = {"prompt_tokens": 44, "completion_tokens": 2, "total_tokens": 46, "prompt_tokens_details": details,
             "cache_creation_input_tokens": 40, "cache_read_input_tokens": 1}
    body = orjson.loads(completion_body(Dumped({"id": "x", "model": "m", "choices": [], "usage": usage})))
    assert body["usage"] == {"prompt_tokens": 44, "completion_tokens": 2, "total_tokens": 46,
                             "prompt_tokens_details": {"cached_tokens": 1, "cache_creation_tokens": 40}}


def test_completion_body_without_usage_or_created_still_has_a_created_time() -> None:
    body = orjson.loads(completion_body(Dumped({"id": "x", "model": "m", "choices": []})))
    assert body["created"] > 0
    assert "usage" not in body
