"""Server-sent events as the stand-ins write them: data events, named events, and whole chat answers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from gateway.sse import DONE_EVENT, usage_event

DONE = DONE_EVENT


def event(payload: dict[str, Any]) -> bytes:
    """One SSE data event."""
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def named_event(kind: str, data: dict[str, Any]) -> bytes:
    """One event with an `event:` line and its kind as the payload's type (the Responses API's, Anthropic's)."""
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **data}) + b"\n\n"


def chunk(model: str, content: str | None = None, finish: str | None = None, role: bool = False) -> bytes:
    """One chat.completion.chunk event."""
    delta: dict[str, Any] = {"role": "assistant", "content": ""} if role else {}
    if content is not None:
        delta["content"] = content
    return event({"id": "chatcmpl-fault", "object": "chat.completion.chunk", "created": 0, "model": model,
                  "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})


def usage(model: str, prompt_tokens: int, completion_tokens: int) -> bytes:
    """The final usage event of a stream."""
    template = {"id": "chatcmpl-fault", "object": "chat.completion.chunk", "created": 0, "model": model}
    return usage_event(template, {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                                  "total_tokens": prompt_tokens + completion_tokens})


def chat_events(model: str, words: Sequence[str], role: bool = True, finish: bool = True,
                with_usage: bool = True) -> tuple[bytes, ...]:
    """A whole answer as events: the role delta, one event per word, finish_reason, usage (no [DONE])."""
    events = [chunk(model, role=True)] if role else []
    events += [chunk(model, word) for word in words]
    if finish:
        events.append(chunk(model, finish="stop"))
    if with_usage:
        events.append(usage(model, 7, len(words)))
    return tuple(events)
