"""A translated upstream's answers in OpenAI's wire format: litellm's whole answers, and provider streams by hand.

litellm's per-chunk stream wrapper costs about half a millisecond of CPU a frame, so the event streams of
Anthropic and Gemini are read off litellm's HTTP response and translated here (`AnthropicFrames`,
`GeminiFrames`); any other provider's stream goes through litellm's wrapper (`wrapped`), slower but complete.
Nothing here imports litellm.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import httpx
import orjson

from gateway import sse
from gateway.errors import UpstreamCut
from gateway.upstreams import bounded
from gateway.upstreams.spec import Limits

EVENT_STREAM = b"text/event-stream"
DONE = sse.DONE_EVENT


class Frames:
    """Writes OpenAI chat.completion.chunk events; the provider-specific subclasses read the provider's events."""

    def __init__(self, upstream: str, model: str, include_usage: bool) -> None:
        self.upstream = upstream
        self.model = model
        self.include_usage = include_usage
        self.finished = False
        self._head = b""

    def start(self, response_id: str, model: str) -> bytes:
        """The opening event, with the assistant's role."""
        self._head = (b'{"id":' + orjson.dumps(response_id) + b',"object":"chat.completion.chunk","created":'
                      + str(int(time.time())).encode() + b',"model":' + orjson.dumps(model or self.model)
                      + b',"choices":[{"index":0,"delta":')
        return self.delta({"role": "assistant", "content": ""})

    def delta(self, delta: Mapping[str, Any]) -> bytes:
        return sse.data_event(self._head + orjson.dumps(delta) + b',"finish_reason":null}]}')

    def finish(self, reason: str) -> bytes:
        self.finished = True
        return sse.data_event(self._head + b'{},"finish_reason":' + orjson.dumps(reason) + b"}]}")

    def ending(self, prompt: int, completion: int, cached: int = 0, written: int = 0) -> bytes:
        """The usage event (when asked for) and [DONE]; cached and written are prompt tokens read from and written
        to the provider's prompt cache."""
        if not self.include_usage:
            return DONE
        usage: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion,
                                 "total_tokens": prompt + completion}
        if cached or written:
            usage["prompt_tokens_details"] = prompt_details(cached, written)
        head = self._head.rsplit(b',"choices":', 1)[0]
        return sse.data_event(head + b',"choices":[],"usage":' + orjson.dumps(usage) + b"}") + DONE

    def event(self, data: dict[str, Any]) -> bytes:
        raise NotImplementedError

    def end(self) -> bytes:
        """What to send once the provider's body ended; nothing when it ended before finishing."""
        return b""


ANTHROPIC_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls",
                    "pause_turn": "stop", "refusal": "content_filter", "model_context_window_exceeded": "length"}


class AnthropicFrames(Frames):
    """Anthropic Messages events (message_start, content_block_*, message_delta, message_stop) to OpenAI chunks."""

    def __init__(self, upstream: str, model: str, include_usage: bool, json_tool: str | None,
                 names: Mapping[str, str]) -> None:
        super().__init__(upstream, model, include_usage)
        self._json_tool = json_tool  # litellm answers response_format through a tool on older models
        self._names = names
        self._tools: dict[int, int] = {}  # content block index -> tool call index
        self._json_blocks: set[int] = set()
        self._usage = {"input_tokens": 0, "output_tokens": 0, "cache_read_input_tokens": 0,
                       "cache_creation_input_tokens": 0}
        self._reason = "stop"

    def event(self, data: dict[str, Any]) -> bytes:
        kind = data.get("type")
        if kind == "content_block_delta":
            return self._block_delta(data.get("index", 0), data.get("delta") or {})
        if kind == "content_block_start":
            return self._block_start(data.get("index", 0), data.get("content_block") or {})
        if kind == "message_start":
            message = data.get("message") or {}
            self._count(message.get("usage"))
            return self.start(str(message.get("id") or "msg"), str(message.get("model") or ""))
        if kind == "message_delta":
            self._count(data.get("usage"))
            stop = (data.get("delta") or {}).get("stop_reason")
            self._reason = ANTHROPIC_FINISH.get(stop, "stop") if stop else self._reason
            if self._reason == "tool_calls" and self._json_blocks and not self._tools:
                self._reason = "stop"
            return b""
        if kind == "message_stop":
            usage = self._usage
            cached, written = usage["cache_read_input_tokens"], usage["cache_creation_input_tokens"]
            prompt = usage["input_tokens"] + cached + written
            return self.finish(self._reason) + self.ending(prompt, usage["output_tokens"], cached, written)
        if kind == "error":
            error = data.get("error") or {}
            raise UpstreamCut(self.upstream, f"stream error: {error.get('type', 'error')}")
        return b""  # ping, content_block_stop, and event types added later

    def _block_start(self, index: int, block: Mapping[str, Any]) -> bytes:
        if block.get("type") != "tool_use":
            return b""
        if self._json_tool is not None and block.get("name") == self._json_tool:
            self._json_blocks.add(index)
            return b""
        self._tools[index] = position = len(self._tools)
        name = str(block.get("name", ""))
        call = {"index": position, "id": block.get("id"), "type": "function",
                "function": {"name": self._names.get(name, name), "arguments": ""}}
        return self.delta({"tool_calls": [call]})

    def _block_delta(self, index: int, delta: Mapping[str, Any]) -> bytes:
        kind = delta.get("type")
        if kind == "text_delta":
            return self.delta({"content": delta.get("text", "")})
        if kind == "input_json_delta":
            partial = delta.get("partial_json", "")
            if index in self._json_blocks:
                return self.delta({"content": partial}) if partial else b""
            if index in self._tools and partial:
                return self.delta({"tool_calls": [{"index": self._tools[index], "function": {"arguments": partial}}]})
            return b""
        if kind == "thinking_delta":
            return self.delta({"reasoning_content": delta.get("thinking", "")})
        return b""  # signature_delta, citations_delta

    def _count(self, usage: Any) -> None:
        if isinstance(usage, dict):
            for key in self._usage:
                if isinstance(usage.get(key), int):
                    self._usage[key] = usage[key]


GEMINI_FILTERED = frozenset({"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY"})


class GeminiFrames(Frames):
    """Gemini streamGenerateContent (alt=sse) responses to OpenAI chunks; the body's end is the stream's end."""

    def __init__(self, upstream: str, model: str, include_usage: bool,
                 encode_call_id: Callable[[str, str | None], str]) -> None:
        super().__init__(upstream, model, include_usage)
        self._encode_call_id = encode_call_id
        self._started = False
        self._calls = 0
        self._usage: dict[str, Any] = {}

    def event(self, data: dict[str, Any]) -> bytes:
        out = b""
        if not self._started:
            self._started = True
            out = self.start(str(data.get("responseId") or "gemini"), str(data.get("modelVersion") or ""))
        if isinstance(data.get("usageMetadata"), dict):
            self._usage = data["usageMetadata"]
        candidates = data.get("candidates") or []
        candidate = candidates[0] if candidates and isinstance(candidates[0], dict) else {}
        for part in (candidate.get("content") or {}).get("parts") or ():
            out += self._part(part)
        reason = candidate.get("finishReason") or (data.get("promptFeedback") or {}).get("blockReason")
        if reason and not self.finished:
            out += self.finish(self._finish_reason(str(reason)))
        return out

    def _part(self, part: Mapping[str, Any]) -> bytes:
        if "text" in part:
            text = part["text"]
            return self.delta({"reasoning_content": text} if part.get("thought") else {"content": text})
        call = part.get("functionCall")
        if not isinstance(call, dict):
            return b""
        call_id = self._encode_call_id(f"call_{os.urandom(12).hex()}", part.get("thoughtSignature"))
        arguments = orjson.dumps(call.get("args") or {}).decode()
        self._calls += 1
        return self.delta({"tool_calls": [{"index": self._calls - 1, "id": call_id, "type": "function",
                                           "function": {"name": call.get("name", ""), "arguments": arguments}}]})

    def _finish_reason(self, reason: str) -> str:
        if reason in GEMINI_FILTERED:
            return "content_filter"
        if reason == "MAX_TOKENS":
            return "length"
        return "tool_calls" if self._calls else "stop"

    def end(self) -> bytes:
        if not self.finished:
            return b""
        usage = self._usage
        completion = int(usage.get("candidatesTokenCount", 0)) + int(usage.get("thoughtsTokenCount", 0))
        return self.ending(int(usage.get("promptTokenCount", 0)), completion,
                           int(usage.get("cachedContentTokenCount", 0)))


def prompt_details(cached: int, written: int) -> dict[str, int]:
    """OpenAI's prompt_tokens_details of a prompt with cache reads, and litellm's name for its cache writes."""
    return {"cached_tokens": cached, "cache_creation_tokens": written} if written else {"cached_tokens": cached}


async def translated(response: httpx.Response, frames: Frames, limits: Limits) -> AsyncIterator[bytes]:
    """Cut the provider's body into whole events (one past sse_event_bytes fails), and yield the OpenAI events
    their data lines make, one batch per read."""
    event, decoder = frames.event, sse.Decoder()
    async for piece in bounded.events(frames.upstream, response.aiter_bytes(), None, limits):
        out = b"".join([event(orjson.loads(found.data)) for found in decoder.feed(piece) if found.data])
        if out:
            yield out
    out = b"".join([event(orjson.loads(found.data)) for found in decoder.end() if found.data])
    if out:
        yield out
    tail = frames.end()
    if tail:
        yield tail


async def wrapped(first: Any, stream: Any) -> AsyncIterator[bytes]:
    """litellm's own stream wrapper (any provider): each ModelResponseStream as one event, then [DONE]."""
    chunk = first
    while chunk is not None:
        yield sse.data_event(orjson.dumps(chunk.model_dump(exclude_none=True)))
        chunk = await anext(stream, None)
    yield DONE


def completion_body(response: Any) -> bytes:
    """litellm's ModelResponse as OpenAI's chat.completion JSON, without litellm's extra fields."""
    data = response.model_dump()
    choices = []
    for choice in data.get("choices") or ():
        message = choice.get("message") or {}
        out: dict[str, Any] = {"role": message.get("role") or "assistant", "content": message.get("content"),
                               "refusal": None}
        if message.get("tool_calls"):
            out["tool_calls"] = [{"id": call.get("id"), "type": "function",
                                  "function": {"name": call["function"].get("name"),
                                               "arguments": call["function"].get("arguments") or ""}}
                                 for call in message["tool_calls"]]
        if message.get("reasoning_content"):
            out["reasoning_content"] = message["reasoning_content"]
        choices.append({"index": choice.get("index", 0), "message": out, "finish_reason": choice.get("finish_reason"),
                        "logprobs": choice.get("logprobs")})
    body = {"id": data.get("id"), "object": "chat.completion", "created": data.get("created") or int(time.time()),
            "model": data.get("model"), "choices": choices}
    usage = data.get("usage")
    if isinstance(usage, dict):
        body["usage"] = {key: usage.get(key) or 0 for key in ("prompt_tokens", "completion_tokens", "total_tokens")}
        details = usage.get("prompt_tokens_details") or {}
        cached = details.get("cached_tokens")
        written = details.get("cache_creation_tokens") or details.get("cache_write_tokens")  # litellm names it both
        if cached or written:
            body["usage"]["prompt_tokens_details"] = prompt_details(cached or 0, written or 0)
    return orjson.dumps(body)
