"""Plain ASGI for the hot path: its types, headers, bounded body reads, JSON bodies, whole responses."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

import orjson

from gateway.errors import InvalidRequest, PayloadTooLarge

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]
JSON = b"application/json"
# Deeper bodies are refused: the encoder of what goes upstream stops at 254 levels; no OpenAI request comes close.
MAX_DEPTH = 250


class ClientGone(Exception):
    """The client disconnected before the request was read."""


def header_map(scope: Scope) -> dict[str, str]:
    """Request headers by lower-case name; the last of repeated headers wins."""
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}


async def read_body(receive: Receive, headers: dict[str, str], limit: int) -> bytes:
    """The whole request body, refused with 413 as soon as it is known to be over limit."""
    declared = headers.get("content-length")
    if declared is not None and not declared.isdigit():
        raise InvalidRequest("Content-Length is not a number")
    if declared is not None and int(declared) > limit:
        raise PayloadTooLarge(f"request body is over the limit of {limit} bytes")
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body is over the limit of {limit} bytes")
        parts.append(chunk)
        if not message.get("more_body"):
            return parts[0] if len(parts) == 1 else b"".join(parts)


def parse_object(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object; 400 when it is not one, or nests deeper than MAX_DEPTH."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object")
    # A body with fewer brackets than the limit cannot nest deeper than it: a C pass or two spare the check.
    if len(raw) > MAX_DEPTH and raw.count(b"{") + raw.count(b"[") > MAX_DEPTH and not _encodable(body):
        raise InvalidRequest(f"the body nests objects and arrays deeper than {MAX_DEPTH} levels")
    return body


def _encodable(body: dict[str, Any]) -> bool:
    """True when body nests no deeper than MAX_DEPTH: orjson's encoder, which writes what goes upstream, stops at
    254 levels, and the five wrapping lists leave an adapter room to nest the body one level or two deeper."""
    try:
        orjson.dumps([[[[[body]]]]])
    except orjson.JSONEncodeError:
        return False
    return True


async def send_bytes(send: Send, status: int, body: bytes, content_type: bytes, extra: Iterable[tuple[bytes, bytes]]
                     = ()) -> None:
    """Send a complete response."""
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class DisconnectWatch:
    """Cancels a task when its client goes away, so its upstream request is closed at once.

    Watching takes a task of its own (about 10 µs to start and stop), so it starts only once the request has
    run for after_s: most plain requests are answered before then, and one left sooner is caught at after_s.
    """

    def __init__(self, receive: Receive, task: asyncio.Task[Any], after_s: float) -> None:
        self._receive = receive
        self._task = task
        self._watcher: asyncio.Task[None] | None = None
        self._timer = asyncio.get_running_loop().call_later(after_s, self._start)

    def _start(self) -> None:
        self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass
        self._task.cancel()

    @property
    def client_gone(self) -> bool:
        """Whether the task was cancelled because its client went away."""
        return self._watcher is not None and self._watcher.done() and not self._watcher.cancelled()

    def stop(self) -> None:
        """Stop watching: before the response completes (the client may then close), and when it is over."""
        self._timer.cancel()
        if self._watcher is not None:
            self._watcher.cancel()
