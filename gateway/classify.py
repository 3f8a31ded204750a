"""Request body -> the features a decision reads: route, token estimate, needs, data class."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway import detectors
from gateway.errors import InvalidRequest
from gateway.policy.decide import CHOICE_FIELDS, MAX_CHOICES, MAX_TOKEN_FIELDS, Features
from gateway.policy.model import Policy

CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4
TOKENS_PER_IMAGE = 765
TEXT_FIELDS = {"chat": "messages", "completions": "prompt", "embeddings": "input", "responses": "input"}


def features(policy: Policy, tenant: str, endpoint: str, body: dict[str, Any], headers: Mapping[str, str]) -> Features:
    """Validate the fields routing depends on and describe the request; InvalidRequest names a bad param."""
    texts: list[str] = []
    images, has_tools = _collect(endpoint, body, texts)
    max_tokens = next(filter(None, (_optional_int(body, f) for f in MAX_TOKEN_FIELDS[endpoint])), None)
    n = max((_optional_int(body, f, MAX_CHOICES) or 1 for f in CHOICE_FIELDS[endpoint]), default=1)
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise InvalidRequest("'stream' must be a boolean", param="stream")
    response_format = body.get("response_format") or (body.get("text") or {}).get("format")
    wants_json = isinstance(response_format, dict) and response_format.get("type") in ("json_object", "json_schema")
    chars = sum(map(len, texts))
    prompt_tokens = chars // CHARS_PER_TOKEN + TOKENS_PER_MESSAGE * len(texts) + TOKENS_PER_IMAGE * images
    return Features(route=body["model"], tenant=tenant, prompt_tokens=prompt_tokens, endpoint=endpoint,
                    max_tokens=max_tokens, n=n,
                    stream=stream, has_tools=has_tools, wants_json=wants_json, has_images=images > 0,
                    data_class=data_class(policy, tenant, headers, texts), headers=headers)


def data_class(policy: Policy, tenant: str, headers: Mapping[str, str], texts: list[str]) -> str | None:
    """The most sensitive of the tenant's floor, the declared header and every detector that fires."""
    return explain_class(policy, tenant, headers, texts)[0]


def explain_class(policy: Policy, tenant: str, headers: Mapping[str, str],
                  texts: list[str]) -> tuple[str | None, str]:
    """The data class and what set it: "tenant floor", "header", "detector NAME" or "default"."""
    classes = policy.doc.data_classes
    if not classes:
        return None, "no data classes"
    names = list(classes)
    floor = policy.doc.tenants[tenant].data_class
    rank, why = (policy.class_rank[floor], "tenant floor") if floor else (0, "default")
    declared = headers.get(policy.doc.classify.header)
    if declared is not None:
        if declared not in classes:
            raise InvalidRequest(f"unknown data class '{declared}' (known: {', '.join(names)})",
                                 param=policy.doc.classify.header)
        if policy.class_rank[declared] > rank:
            rank, why = policy.class_rank[declared], "header"
    text = "\n".join(texts) if policy.class_detectors else ""
    for group in policy.class_detectors:
        if group.rank <= rank:
            break
        fired = detectors.scan(group.detectors, text)
        if fired:
            rank, why = group.rank, f"detector {fired}"
            break
    return names[rank], why


def request_texts(endpoint: str, body: dict[str, Any]) -> list[str]:
    """All text of a request the detectors read."""
    texts: list[str] = []
    _collect(endpoint, body, texts)
    return texts


def _collect(endpoint: str, body: dict[str, Any], texts: list[str]) -> tuple[int, bool]:
    """Gather the request's text into texts; return (image count, whether it offers tools)."""
    field = TEXT_FIELDS[endpoint]
    if field not in body:
        raise InvalidRequest(f"'{field}' is required", param=field)
    value = body[field]
    if endpoint == "chat":
        return _messages(value, texts), _tools(body)
    if endpoint == "responses":
        images = _items(value, texts)
        if isinstance(body.get("instructions"), str):
            texts.append(body["instructions"])
        return images, _tools(body)
    _inputs(value, field, texts)
    return 0, _tools(body)


def _items(value: Any, texts: list[str]) -> int:
    """The Responses API's input: a string, or items whose content is a string or a list of parts."""
    if isinstance(value, str):
        texts.append(value)
        return 0
    if not isinstance(value, list):
        raise InvalidRequest("'input' must be a string or an array of items", param="input")
    images = 0
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise InvalidRequest(f"input[{i}] must be an object", param=f"input[{i}]")
        images += _content(item.get("content"), f"input[{i}]", texts)
        for key in ("output", "arguments"):  # tool results and calls carry text too
            if isinstance(item.get(key), str):
                texts.append(item[key])
    return images


def _messages(messages: Any, texts: list[str]) -> int:
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty array", param="messages")
    images = 0
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise InvalidRequest(f"messages[{i}] must be an object with a 'role'", param=f"messages[{i}]")
        images += _content(message.get("content"), f"messages[{i}]", texts)
        for call in message.get("tool_calls") or ():
            function = call.get("function") if isinstance(call, dict) else None
            if not isinstance(function, dict):
                raise InvalidRequest(f"messages[{i}].tool_calls entries need a 'function' object",
                                     param=f"messages[{i}].tool_calls")
            if isinstance(function.get("arguments"), str):
                texts.append(function["arguments"])
    return images


def _content(content: Any, place: str, texts: list[str]) -> int:
    if content is None:
        return 0
    if isinstance(content, str):
        texts.append(content)
        return 0
    if not isinstance(content, list):
        raise InvalidRequest(f"{place}.content must be a string or an array of parts", param=f"{place}.content")
    images = 0
    for part in content:
        if not isinstance(part, dict):
            raise InvalidRequest(f"{place}.content parts must be objects", param=f"{place}.content")
        if isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif part.get("type") in ("image_url", "input_image", "image"):
            images += 1
    return images


def _inputs(value: Any, field: str, texts: list[str]) -> None:
    if isinstance(value, str):
        texts.append(value)
    elif isinstance(value, list):
        texts.extend(v for v in value if isinstance(v, str))
    else:
        raise InvalidRequest(f"'{field}' must be a string or an array", param=field)


def _tools(body: dict[str, Any]) -> bool:
    tools = body.get("tools")
    if tools is None:
        return False
    if not isinstance(tools, list):
        raise InvalidRequest("'tools' must be an array", param="tools")
    return bool(tools)


def _optional_int(body: dict[str, Any], name: str, most: int | None = None) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1 or (most is not None and value > most):
        bound = f" of at most {most}" if most is not None else ""
        raise InvalidRequest(f"'{name}' must be a positive integer{bound}", param=name)
    return value
