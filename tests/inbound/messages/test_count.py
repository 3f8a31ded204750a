"""count_tokens answers the estimate the gateway budgets with, over every field the upstream reads."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gateway.errors import InvalidRequest
from gateway.inbound.messages.count import answer, input_tokens
from gateway.routing.classify import CHARS_PER_TOKEN, TOKENS_PER_IMAGE

BASE: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "x" * 400}]}


def test_the_count_grows_with_every_field_read() -> None:
    plain = input_tokens(BASE)
    assert plain >= 400 // CHARS_PER_TOKEN
    assert input_tokens({**BASE, "system": "y" * 400}) >= plain + 100
    tools = [{"name": "t", "description": "z" * 400, "input_schema": {"type": "object"}}]
    assert input_tokens({**BASE, "tools": tools}) >= plain + 100
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}
    with_image = {**BASE, "messages": [{"role": "user", "content": [image]}]}
    assert input_tokens(with_image) >= TOKENS_PER_IMAGE


def test_answer_shape() -> None:
    assert orjson.loads(answer(BASE)) == {"input_tokens": input_tokens(BASE)}


def test_no_messages_is_a_400() -> None:
    with pytest.raises(InvalidRequest):
        input_tokens({"model": "m"})
