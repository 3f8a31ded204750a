"""A body too big to walk in Python, dumped as its JSON text a piece at a time.

Classification reads such a body from its text (gateway/routing/classify.py). One orjson call over 150,000 small
messages holds a worker thread's GIL for 30-36 ms, so the body's fields, and the items of any array or object of
more than ITEMS_PER_PIECE items, are dumped a batch at a time; the pieces join to exactly orjson.dumps(body).
"""

from __future__ import annotations

import itertools
import operator
from typing import Any

import orjson

from gateway.errors import InvalidRequest

ITEMS_PER_PIECE = 1024
_SIZED_TYPES = (str, list, dict)
_SIZED = frozenset(_SIZED_TYPES)
_VALUE = operator.itemgetter(1)


def text(body: dict[str, Any]) -> str:
    """orjson.dumps(body) as text, dumped in pieces; InvalidRequest when it nests too deeply for orjson."""
    pieces: list[bytes] = []
    try:
        encode(body, 1, pieces)
    except orjson.JSONEncodeError:
        raise InvalidRequest("the body nests objects and arrays too deeply") from None
    return b"".join(pieces).decode()


def encode(value: Any, depth: int, pieces: list[bytes]) -> None:
    """Append orjson.dumps(value) to pieces, for value at depth (the body 1): the body's fields, and the items of an
    array or object of more than ITEMS_PER_PIECE items, a batch at a time; an item with more than ITEMS_PER_PIECE
    items itself, or a string longer than that, on its own."""
    if not isinstance(value, (dict, list)) or (depth > 1 and len(value) <= ITEMS_PER_PIECE):
        pieces.append(_dumped(value, depth))
        return
    pieces.append(b"{" if isinstance(value, dict) else b"[")
    items = list(value.items()) if isinstance(value, dict) else value
    for start in range(0, len(items), ITEMS_PER_PIECE):
        batch = items[start:start + ITEMS_PER_PIECE]
        values = list(map(_VALUE, batch)) if isinstance(value, dict) else batch
        if _sized(values) <= ITEMS_PER_PIECE:
            _add_batch(value, batch, depth, pieces)
        else:
            for item in batch:
                _add_item(value, item, depth, pieces)
    if pieces[-1] == b",":
        pieces.pop()
    pieces.append(b"}" if isinstance(value, dict) else b"]")


def _sized(values: list[Any]) -> int:
    """The largest len() of values, 0 for a number, a boolean or null (no Python work a value)."""
    try:
        return max(map(len, values), default=0)
    except TypeError:  # numbers, booleans or nulls among them
        if _SIZED.isdisjoint(map(type, values)):
            return 0
        return max(map(len, itertools.compress(values, map(isinstance, values, itertools.repeat(_SIZED_TYPES)))))


def _add_item(container: dict[str, Any] | list[Any], item: Any, depth: int, pieces: list[bytes]) -> None:
    """Append one item of container (a key and value pair for an object) and a comma."""
    if isinstance(container, dict):
        pieces.append(orjson.dumps(item[0]) + b":")
        item = item[1]
    encode(item, depth + 1, pieces)
    pieces.append(b",")


def _add_batch(container: dict[str, Any] | list[Any], batch: list[Any], depth: int, pieces: list[bytes]) -> None:
    """Append the items in batch (key and value pairs for an object) as they appear in container's JSON, and a
    comma."""
    dumped = _dumped(dict(batch) if isinstance(container, dict) else batch, depth)
    pieces += (dumped[1:-1], b",")


def _dumped(value: Any, depth: int) -> bytes:
    """orjson.dumps(value), with value held as deep as it is in the body: orjson refuses the same nesting."""
    wrapped = value
    for _ in range(depth - 1):
        wrapped = [wrapped]
    dumped = orjson.dumps(wrapped)
    return dumped[depth - 1:len(dumped) - depth + 1]
