"""Plain ASGI helpers for the hot path: headers, bounded body reads, JSON and error responses."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

import orjson

from gateway.errors import GatewayError, InvalidRequest, PayloadTooLarge

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]
JSON = b"application/json"


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
    """The body as a JSON object; 400 when it is not one."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object")
    return body


async def send_bytes(send: Send, status: int, body: bytes, content_type: bytes, extra: Iterable[tuple[bytes, bytes]]
                     = ()) -> None:
    """Send a complete response."""
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def send_error(send: Send, error: GatewayError, extra: Iterable[tuple[bytes, bytes]] = ()) -> None:
    """Send an error in OpenAI's shape."""
    await send_bytes(send, error.status, error.body(), JSON, [*error.headers, *extra])


async def watch_disconnect(receive: Receive, task: asyncio.Task[Any]) -> None:
    """Cancel task when the client goes away, so its upstream request is closed at once; then return."""
    while (await receive())["type"] != "http.disconnect":
        pass
    task.cancel()
