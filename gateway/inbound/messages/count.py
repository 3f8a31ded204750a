"""POST /v1/messages/count_tokens: the prompt estimate the gateway budgets and routes with, not a tokenizer's."""

from __future__ import annotations

from typing import Any

import orjson

from gateway.routing import classify


def input_tokens(body: dict[str, Any]) -> int:
    """The estimated input tokens of a Messages request: every string the upstream would read, as classify counts."""
    return classify.request_texts("messages", body).prompt_tokens()


def answer(body: dict[str, Any]) -> bytes:
    """The count_tokens answer for body."""
    return orjson.dumps({"input_tokens": input_tokens(body)})
