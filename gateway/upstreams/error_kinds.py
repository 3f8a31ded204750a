"""What an upstream's error answer means, from one table: its structured fields first, its wording second.

The kinds the gateway acts on are `context_length` (move to a candidate with a larger window) and
`content_filter` (the client's refusal, passed on). Patterns only ever see a bounded prefix of a body.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

PREFIX_BYTES = 4096  # no pattern reads further into an upstream's body than this
STATUSES = frozenset({400, 413, 422, 500})  # 500: llama.cpp's "input (N tokens) is too large to process"
OUTPUT_LIMITS = frozenset({"max_tokens", "max_completion_tokens", "max_output_tokens"})

# (field, value, kind): a structured field with this value says what the error is, whoever words the message.
STRUCTURED: tuple[tuple[str, str, str], ...] = (
    ("code", "context_length_exceeded", "context_length"),  # OpenAI, SGLang, vLLM, the litellm adapter
    ("type", "exceed_context_size_error", "context_length"),  # llama.cpp
    ("code", "string_above_max_length", "context_length"),  # OpenAI, one message too long
    ("code", "content_filter", "content_filter"),  # OpenAI, Azure
    ("code", "content_policy_violation", "content_filter"),  # OpenAI images, the litellm adapter
)
# vLLM: 400 with param max_tokens, "max_tokens=600 cannot be greater than max_model_len=512"
OUTPUT_OVER_WINDOW = re.compile(r"max_model_len|context|maximum (?:model|allowed) length", re.IGNORECASE)
WORDING: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(
        r"context_length_exceeded|maximum context length|longer than the model'?s context length"
        r"|exceeds? the (?:available )?context (?:size|length|window)|context size has been exceeded"
        r"|input length exceeds|too many tokens|prompt is too long|cannot be greater than max_model_len"
        r"|input \(\d+ tokens\) is too large to process"
        r"|(?:longer than|exceeds?) the maximum (?:model|allowed|context) length", re.IGNORECASE), "context_length"),
    (re.compile(r"content_filter|content_policy_violation|ResponsibleAIPolicyViolation|safety system",
                re.IGNORECASE), "content_filter"),
)


def parse(body: bytes) -> dict[str, Any] | None:
    """The error object of a JSON error body ({"error": {...}}, vLLM's flat form, Ollama's string), or None."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(parsed, dict):
        return None
    inner = parsed.get("error")
    if isinstance(inner, dict):
        return inner
    if isinstance(inner, str):
        return {"message": inner}
    return parsed


def kind_of(status: int, body: bytes, error: dict[str, Any] | None = None) -> str | None:
    """The kind of an error answer, or None; error is body already parsed with parse(), when it was."""
    if status not in STATUSES:
        return None
    if error is None:
        error = parse(body) if len(body) <= 16 * PREFIX_BYTES else None
    kind = _kind(body, error)
    return kind if status < 500 or kind == "context_length" else None  # a 5xx is never the client's refusal


def _kind(body: bytes, error: dict[str, Any] | None) -> str | None:
    message = body[:PREFIX_BYTES].decode("utf-8", "replace")
    if error is not None:
        for field, value, kind in STRUCTURED:
            if str(error.get(field, "")).lower() == value:
                return kind
        text = error.get("message")
        message = text[:PREFIX_BYTES] if isinstance(text, str) else message
        if error.get("param") in OUTPUT_LIMITS and OUTPUT_OVER_WINDOW.search(message):
            return "context_length"
    return next((kind for pattern, kind in WORDING if pattern.search(message)), None)
