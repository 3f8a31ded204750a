"""What a hostile upstream sends: a gzip bomb, and answers that echo the provider key in many forms.

The fault server sends them (`Flood`, `Echo` in gateway/tools/standin/behaviours.py): nothing here allocates a
big body.
"""

from __future__ import annotations

import base64
import struct
import zlib
from typing import Any

import orjson

from gateway.sse import DONE_EVENT
from gateway.tools.standin.events import event

MIB = 1 << 20


def gzip_bomb(inflated_mib: int = 1024) -> bytes:
    """A valid gzip body of about 1 MB (for 1024) that inflates to inflated_mib MiB of zeros, made in under a second.

    One MiB of zeros is deflated after a full flush, so the same block can be repeated: nothing is inflated here.
    """
    zeros = bytes(MIB)
    deflate = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    first = deflate.compress(zeros) + deflate.flush(zlib.Z_FULL_FLUSH)
    block = deflate.compress(zeros) + deflate.flush(zlib.Z_FULL_FLUSH)
    last = deflate.flush()[:-8]  # the final empty block, without the trailer for 2 MiB that zlib wrote
    crc = 0
    for _ in range(inflated_mib):
        crc = zlib.crc32(zeros, crc)
    return first + block * (inflated_mib - 1) + last + struct.pack("<II", crc, (inflated_mib * MIB) & 0xFFFFFFFF)


def escaped(text: str) -> str:
    """text with every character written as a JSON \\u escape."""
    return "".join(f"\\u{ord(c):04x}" for c in text)


# How a hostile upstream may echo the key it was sent: each a function of the key, giving the text to embed.
ECHOES = {
    "as-is": lambda key: key,
    "base64": lambda key: base64.b64encode(key.encode()).decode(),
    "base64-of-header": lambda key: base64.b64encode(f"Authorization: Bearer {key}".encode()).decode(),
    "lower": lambda key: key.lower(),
    "upper": lambda key: key.upper(),
    "prefix": lambda key: key[:10] + "...",
    "suffix": lambda key: "..." + key[1:],
    "middle": lambda key: "..." + key[5:-5].upper() + "...",
    "u-escaped": escaped,
}


def completion(text: str, raw: bool = False) -> bytes:
    """A chat completion whose content is text; raw puts text into the JSON unencoded (for \\u escapes)."""
    body = {"id": "chatcmpl-echo", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "@@"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}
    return _embed(body, text, raw)


def stream(text: str, raw: bool = False) -> bytes:
    """A whole SSE stream whose middle event's content is text, and one whose error names it."""
    def chunk(content: str | None, finish: str | None = None) -> dict[str, Any]:
        delta = {"content": content} if content is not None else {}
        return {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    events = [orjson.dumps(chunk("key: ")), _embed(chunk("@@"), text, raw), orjson.dumps(chunk(None, "stop"))]
    return b"".join(b"data: " + e + b"\n\n" for e in events) + DONE_EVENT


def error(text: str, raw: bool = False) -> bytes:
    """An OpenAI-shaped 4xx body whose message holds text."""
    return _embed({"error": {"message": "Incorrect API key provided: @@", "type": "invalid_request_error",
                             "param": None, "code": "invalid_api_key"}}, text, raw)


def _embed(body: dict[str, Any], text: str, raw: bool) -> bytes:
    encoded = orjson.dumps(body)
    return encoded.replace(b"@@", text.encode() if raw else orjson.dumps(text)[1:-1])


def spelled_stream(key: str, size: int) -> bytes:
    """A whole SSE stream that spells key out size characters an event, as a model echoing it would."""
    def chunk(content: str) -> bytes:
        return event({"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m",
                      "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}]})
    pieces = ["your key is ", *(key[at:at + size] for at in range(0, len(key), size)), " - keep it safe"]
    return b"".join(chunk(piece) for piece in pieces) + DONE_EVENT
