"""gateway.routing.encoded: a body too big to walk, dumped in pieces that join to its JSON."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gateway.errors import InvalidRequest
from gateway.routing import encoded
from gateway.routing.classify import WALK_LIMIT, request_texts

IMAGE = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}


def chat(*messages: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"model": "chat", "messages": list(messages), **extra}


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def pieces(body: dict[str, Any]) -> list[bytes]:
    """The pieces a body too big to walk is dumped in."""
    found: list[bytes] = []
    encoded.encode(body, 1, found)
    return found


def test_a_body_too_big_to_walk_is_dumped_in_pieces_that_make_its_json() -> None:
    many = [user([{"type": "text", "text": f"note {i} \u00e9\U0001f600"}, IMAGE]) for i in range(WALK_LIMIT // 4)]
    schema = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(3000)}}
    tools = [{"type": "function", "function": {"name": "f", "parameters": schema}}]
    body = chat(*many, tools=tools, n=1, extra=[None] * 5000)
    found = pieces(body)
    assert b"".join(found) == orjson.dumps(body)
    assert len(found) > 20
    assert max(map(len, found)) < len(orjson.dumps(body)) // 10  # no one dump of the whole body
    content = request_texts("chat", body)
    assert content.texts == [orjson.dumps(body).decode()]
    assert (content.chars, content.images, content.unreadable) == (len(content.texts[0]), len(many), "image")


@pytest.mark.parametrize("value", [[1, "a", None, True, 2.5], {"k": [1, {"x": "y"}]}, [[[]]], {}, "x" * 5000])
def test_small_values_dump_as_orjson_does(value: Any) -> None:
    assert encoded.text({"v": value}) == orjson.dumps({"v": value}).decode()


def test_too_deep_for_orjson_is_an_invalid_request() -> None:
    deep: Any = "x"
    for _ in range(300):
        deep = [deep]
    with pytest.raises(InvalidRequest, match="too deeply"):
        encoded.text({"deep": deep})
