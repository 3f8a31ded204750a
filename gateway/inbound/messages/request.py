"""A Messages API request as a chat completions request, for upstreams that speak only OpenAI's API.

What chat completions cannot carry is dropped and named in `Translated.dropped` (the caller counts it):
`cache_control` marks, `thinking` settings and thinking blocks, `top_k` for upstreams that do not take it,
and an error flag on a tool result.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.errors import InvalidRequest

COPIED = ("max_tokens", "temperature", "top_p", "stream")
DROPPED_FIELDS = ("thinking", "service_tier", "container", "mcp_servers", "context_management")
CUSTOM_TOOLS = frozenset({None, "custom"})


@dataclass
class Translated:
    """The chat body, and what of the Messages request it could not carry."""

    body: dict[str, Any]
    dropped: set[str] = field(default_factory=set)


def to_chat(request: Mapping[str, Any], top_k: bool = True) -> Translated:
    """The chat completions body for a Messages request; InvalidRequest for what cannot be translated."""
    out = Translated({"model": request.get("model")})
    body = out.body
    for name in COPIED:
        if name in request:
            body[name] = request[name]
    if "top_k" in request:
        if top_k:
            body["top_k"] = request["top_k"]
        else:
            out.dropped.add("top_k")
    if "stop_sequences" in request:
        body["stop"] = request["stop_sequences"]
    metadata = request.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
        body["user"] = metadata["user_id"]
    out.dropped.update(name for name in DROPPED_FIELDS if name in request)
    body["messages"] = _system(request.get("system"), out) + _messages(request.get("messages"), out)
    if request.get("tools"):
        body["tools"] = [_tool(tool, i, out) for i, tool in enumerate(_array(request["tools"], "tools"))]
    if "tool_choice" in request:
        _tool_choice(request["tool_choice"], body)
    return out


def _array(value: Any, place: str) -> list[Any]:
    if not isinstance(value, list):
        raise InvalidRequest(f"'{place}' must be an array", param=place)
    return value


def _blocks(value: Any, place: str) -> list[dict[str, Any]]:
    """Content as a list of block objects: a string is one text block."""
    if isinstance(value, str):
        return [{"type": "text", "text": value}]
    blocks = _array(value, place)
    for i, block in enumerate(blocks):
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise InvalidRequest(f"{place}[{i}] must be an object with a string 'type'", param=f"{place}[{i}]")
    return blocks


def _system(system: Any, out: Translated) -> list[dict[str, Any]]:
    if system is None:
        return []
    if isinstance(system, str):
        return [{"role": "system", "content": system}] if system else []
    texts = [_text(block, "system", out) for block in _blocks(system, "system")]
    return [{"role": "system", "content": "\n".join(texts)}] if texts else []


def _text(block: dict[str, Any], place: str, out: Translated) -> str:
    if block["type"] != "text" or not isinstance(block.get("text"), str):
        raise InvalidRequest(f"{place} blocks must be text blocks", param=place)
    _note_cache(block, out)
    return str(block["text"])


def _note_cache(block: Mapping[str, Any], out: Translated) -> None:
    if "cache_control" in block:
        out.dropped.add("cache_control")


def _messages(messages: Any, out: Translated) -> list[dict[str, Any]]:
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty array", param="messages")
    chat: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        place = f"messages.{i}"
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise InvalidRequest(f"{place}: each message needs a role of 'user' or 'assistant'", param=place)
        blocks = _blocks(message.get("content"), f"{place}.content")
        if message["role"] == "assistant":
            chat.append(_assistant(blocks, place, out))
        else:
            chat.extend(_user(blocks, place, out))
    return chat


def _assistant(blocks: list[dict[str, Any]], place: str, out: Translated) -> dict[str, Any]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for i, block in enumerate(blocks):
        _note_cache(block, out)
        kind = block["type"]
        if kind == "text":
            texts.append(str(block.get("text", "")))
        elif kind == "tool_use":
            _string(block, "id", f"{place}.content[{i}]")
            _string(block, "name", f"{place}.content[{i}]")
            calls.append({"id": block.get("id"), "type": "function",
                          "function": {"name": block.get("name"), "arguments": _arguments(block.get("input"))}})
        elif kind in ("thinking", "redacted_thinking"):
            out.dropped.add("thinking")
        else:
            raise InvalidRequest(f"{place}: an assistant message cannot hold a '{kind}' block here",
                                 param=f"{place}.content")
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if calls:
        message["tool_calls"] = calls
    return message


def _string(block: Mapping[str, Any], field: str, place: str) -> None:
    """InvalidRequest naming the place unless block's field is a string."""
    if not isinstance(block.get(field), str):
        raise InvalidRequest(f"{place}: '{field}' must be a string", param=f"{place}.{field}")


def _arguments(value: Any) -> str:
    return orjson.dumps(value if value is not None else {}).decode()


def _user(blocks: list[dict[str, Any]], place: str, out: Translated) -> list[dict[str, Any]]:
    """A user turn: its tool results as tool messages first (chat needs them right after the calls), then the rest."""
    results: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for i, block in enumerate(blocks):
        _note_cache(block, out)
        if block["type"] == "tool_result":
            tool, images = _tool_result(block, f"{place}.content[{i}]", out)
            results.append(tool)
            parts.extend(images)
        else:
            parts.append(_part(block, place, out))
    if not parts:
        return results
    if all(p["type"] == "text" for p in parts):
        return [*results, {"role": "user", "content": "".join(p["text"] for p in parts) if len(parts) == 1
                           else parts}]
    return [*results, {"role": "user", "content": parts}]


def _tool_result(block: dict[str, Any], place: str, out: Translated) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A tool message with the result's text, and its images (a tool message holds text only) to follow it."""
    _string(block, "tool_use_id", place)
    content = block.get("content", "")
    texts: list[str] = []
    images: list[dict[str, Any]] = []
    for inner in _blocks(content, f"{place}.content") if content else []:
        _note_cache(inner, out)
        part = _part(inner, place, out)
        if part["type"] == "text":
            texts.append(part["text"])
        else:
            images.append(part)
    if block.get("is_error"):
        out.dropped.add("is_error")
    return {"role": "tool", "tool_call_id": block.get("tool_use_id"), "content": "\n".join(texts)}, images


def _part(block: dict[str, Any], place: str, out: Translated) -> dict[str, Any]:
    kind = block["type"]
    if kind == "text":
        return {"type": "text", "text": str(block.get("text", ""))}
    if kind == "image":
        return {"type": "image_url", "image_url": {"url": _source_url(block.get("source"), place)}}
    if kind == "document":
        source = block.get("source")
        if isinstance(source, dict) and source.get("type") == "text":
            return {"type": "text", "text": str(source.get("data", ""))}
        return {"type": "file", "file": {"file_data": _source_url(source, place)}}
    raise InvalidRequest(f"{place}: a '{kind}' block cannot be translated for this upstream", param=f"{place}.content")


def _source_url(source: Any, place: str) -> str:
    """An image's or document's source as a URL: its own, or a data URL of its base64 data."""
    if isinstance(source, dict) and source.get("type") == "url" and isinstance(source.get("url"), str):
        return str(source["url"])
    if isinstance(source, dict) and source.get("type") == "base64" and isinstance(source.get("data"), str):
        return f"data:{source.get('media_type', 'application/octet-stream')};base64,{source['data']}"
    raise InvalidRequest(f"{place}: a source must be base64 data or a URL", param=f"{place}.content")


def _tool(tool: Any, index: int, out: Translated) -> dict[str, Any]:
    place = f"tools.{index}"
    if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
        raise InvalidRequest(f"{place} must be an object with a string 'name'", param=place)
    if tool.get("type") not in CUSTOM_TOOLS:
        raise InvalidRequest(f"{place}: the server tool '{tool.get('type')}' is Anthropic's own and cannot be "
                             "translated for this upstream", param=place)
    _note_cache(tool, out)
    function: dict[str, Any] = {"name": tool["name"], "parameters": tool.get("input_schema") or {"type": "object"}}
    if isinstance(tool.get("description"), str):
        function["description"] = tool["description"]
    return {"type": "function", "function": function}


def _tool_choice(choice: Any, body: dict[str, Any]) -> None:
    if not isinstance(choice, dict) or not isinstance(choice.get("type"), str):
        raise InvalidRequest("'tool_choice' must be an object with a 'type'", param="tool_choice")
    kind = choice["type"]
    if kind == "tool":
        body["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
    elif kind in ("auto", "any", "none"):
        body["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}[kind]
    else:
        raise InvalidRequest(f"unknown tool_choice type '{kind}'", param="tool_choice.type")
    if choice.get("disable_parallel_tool_use") is True and body.get("tools"):
        body["parallel_tool_calls"] = False
