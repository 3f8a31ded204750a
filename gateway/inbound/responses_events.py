"""The Responses API's stream events the gateway writes or reads itself: the failure ending, `response.created`."""

from __future__ import annotations

import re

import orjson

SEQUENCE = re.compile(rb'"sequence_number":\s*(\d+)')


def response_failed(first: bytes, last: bytes, message: str) -> bytes:
    """The Responses API's ending of a stream that cannot be finished, in that API's shape: `response.failed`
    carrying the response its `response.created` event began (first), numbered after the last event sent; an
    `error` event when no response was seen."""
    sequence = max((int(n) for n in SEQUENCE.findall(last)), default=-1) + 1
    response = created_response(first)
    if response is None:
        error = {"type": "error", "code": "server_error", "message": message, "param": None,
                 "sequence_number": sequence}
        return b"event: error\ndata: " + orjson.dumps(error) + b"\n\n"
    failed = {**response, "status": "failed", "error": {"code": "server_error", "message": message}}
    event = {"type": "response.failed", "sequence_number": sequence, "response": failed}
    return b"event: response.failed\ndata: " + orjson.dumps(event) + b"\n\n"


def created_response(events: bytes) -> dict[str, object] | None:
    """The response object of the `response.created` event among events, if one is there."""
    for line in events.splitlines():
        if line.startswith(b"data:") and b"response.created" in line:
            try:
                data = orjson.loads(line[5:])
            except orjson.JSONDecodeError:
                return None
            response = data.get("response") if isinstance(data, dict) else None
            return response if isinstance(response, dict) else None
    return None
