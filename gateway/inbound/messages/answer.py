"""A chat completion as a Messages API answer: content blocks, stop reason and usage in Anthropic's shape."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from gateway.accounting.usage import Usage

STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "function_call": "tool_use",
                "content_filter": "refusal"}
REASONING_KEYS = ("reasoning_content", "reasoning")  # vLLM, DeepSeek and SGLang name it one way or the other


def message_id(chat_id: Any) -> str:
    """A message id from the completion's (the upstream's own id, kept so its logs can be matched)."""
    return f"msg_{chat_id}" if isinstance(chat_id, str) and chat_id else "msg_translated"


def stop_of(choice: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """The stop reason and stop sequence of a choice (vLLM names the stop string it matched in `stop_reason`)."""
    finish = choice.get("finish_reason")
    if not isinstance(finish, str):
        return None, None
    matched = choice.get("stop_reason")
    if finish == "stop" and isinstance(matched, str):
        return "stop_sequence", matched
    return STOP_REASONS.get(finish, "end_turn"), None


def with_tools(stop_reason: str | None, called: bool) -> str | None:
    """The stop reason once tools were called: tool_use where the server said only stop (many do), as clients
    run the tools only for a tool_use."""
    return "tool_use" if called and stop_reason == "end_turn" else stop_reason


def usage_of(usage: Any) -> dict[str, int]:
    """Chat usage as Messages usage: input tokens neither read from nor written to a cache, the cached ones apart."""
    if not isinstance(usage, dict) and not isinstance(usage, Mapping):  # dict first: no ABC check
        return {"input_tokens": 0, "output_tokens": 0}
    counted = Usage.of(usage)
    return {"input_tokens": counted.prompt_tokens - counted.cache_read_tokens - counted.cache_write_tokens,
            "output_tokens": counted.completion_tokens, "cache_read_input_tokens": counted.cache_read_tokens,
            "cache_creation_input_tokens": counted.cache_write_tokens}


def tool_input(arguments: Any) -> Any:
    """A tool call's arguments as the tool_use block's input object (arguments that are not JSON: empty)."""
    if isinstance(arguments, dict):
        return arguments
    try:
        parsed = orjson.loads(arguments) if isinstance(arguments, str | bytes) and arguments else {}
    except orjson.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def to_message(completion: Mapping[str, Any]) -> dict[str, Any]:
    """The Messages answer for a whole chat completion (its first choice)."""
    choices = completion.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    found = choice.get("message")
    message: dict[str, Any] = found if isinstance(found, dict) else {}
    content: list[dict[str, Any]] = []
    reasoning = next((message[k] for k in REASONING_KEYS if isinstance(message.get(k), str) and message[k]), None)
    if reasoning is not None:
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    if isinstance(message.get("content"), str) and message["content"]:
        content.append({"type": "text", "text": message["content"]})
    for call in message.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            content.append({"type": "tool_use", "id": str(call.get("id") or f"toolu_{len(content)}"),
                            "name": str(function.get("name", "")), "input": tool_input(function.get("arguments"))})
    stop_reason, stop_sequence = stop_of(choice)
    stop_reason = with_tools(stop_reason, any(block["type"] == "tool_use" for block in content))
    return {"id": message_id(completion.get("id")), "type": "message", "role": "assistant",
            "model": str(completion.get("model") or ""), "content": content, "stop_reason": stop_reason,
            "stop_sequence": stop_sequence, "usage": usage_of(completion.get("usage"))}
