"""A raw HTTP/1.1 fault server on loopback: an upstream that misbehaves on purpose and notes when each request came.

It speaks just enough HTTP for a client (one request per connection, `Connection: close`) and follows a script of
behaviours (gateway/tools/standin/behaviours.py): each request takes the next, or `default` once the script is used
up. Every arrival is recorded with its `time.monotonic()`, so tests can assert from the upstream's side how many
attempts came and how far apart. These are the faults an ASGI app cannot make: resets, silences, raw bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import struct
import time
from collections import deque
from collections.abc import Iterable
from http import HTTPStatus
from typing import Any

import orjson

from gateway.tools.standin.behaviours import (
    Arrival,
    Behaviour,
    Echo,
    Flood,
    Hang,
    Json,
    Redirect,
    Reset,
    SilentClose,
    Sse,
    Status,
)
from gateway.tools.standin.events import DONE

PIECE = 1 << 16


class FaultServer:
    """An asyncio TCP server on 127.0.0.1 that answers by script; start and stop it on one event loop."""

    def __init__(self, label: str, script: Iterable[Behaviour] = (), default: Behaviour | None = None) -> None:
        self.label = label
        self.script: deque[Behaviour] = deque(script)
        self.default: Behaviour = default if default is not None else Json()
        self.arrivals: list[Arrival] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def count(self) -> int:
        return len(self.arrivals)

    def gaps(self) -> list[float]:
        """Seconds between consecutive arrivals."""
        times = [a.at for a in self.arrivals]
        return [b - a for a, b in itertools.pairwise(times)]

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, backlog=1024)

    async def stop(self) -> None:
        """Stop listening, end every connection still open, and wait until each socket is closed."""
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for writer in list(self._writers):
            writer.transport.abort()
        if self._server is not None:
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        abort = False
        try:
            arrival = await _read_request(reader)
            if arrival is None:
                return
            self.arrivals.append(arrival)
            behaviour = self.script.popleft() if self.script else self.default
            watcher = asyncio.create_task(_watch_close(reader, arrival))
            try:
                abort = await self._behave(behaviour, arrival, writer)
            finally:
                watcher.cancel()
                await asyncio.gather(watcher, return_exceptions=True)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            abort = True
        finally:
            self._tasks.discard(task)
            self._writers.discard(writer)
            await _close(writer, abort)

    async def _behave(self, behaviour: Behaviour, arrival: Arrival, writer: asyncio.StreamWriter) -> bool:
        """Answer per behaviour; True when the connection is to be reset rather than closed."""
        if isinstance(behaviour, Reset):
            _linger_zero(writer)
            return True
        if isinstance(behaviour, SilentClose):
            await _pause(behaviour.after_s, arrival)
            return False
        if isinstance(behaviour, Hang):
            await arrival.gone.wait()
            return False
        if isinstance(behaviour, Status):
            if not await _pause(behaviour.delay_s, arrival):
                return False
            error = behaviour.body or {"error": {"message": behaviour.message, "type": "fault_error",
                                                 "code": str(behaviour.status), "param": None}}
            extra = {"retry-after": behaviour.retry_after} if behaviour.retry_after is not None else {}
            await _respond(writer, behaviour.status, orjson.dumps(error), extra)
            return False
        if isinstance(behaviour, Json):
            if not await _pause(behaviour.delay_s, arrival):
                return False
            await _respond(writer, 200, orjson.dumps(self._completion(arrival, behaviour)), dict(behaviour.headers))
            return False
        if isinstance(behaviour, Redirect):
            await _respond(writer, behaviour.status, b'{"moved": true}', {"location": behaviour.location})
            return False
        if isinstance(behaviour, Flood):
            return await _flood(behaviour, arrival, writer)
        if isinstance(behaviour, Echo):
            key = arrival.headers.get("authorization", "").removeprefix("Bearer ")
            await _respond(writer, behaviour.status, behaviour.render(key), {"content-type": behaviour.content_type})
            return False
        return await _stream(behaviour, arrival, writer)

    def _completion(self, arrival: Arrival, answer: Json) -> dict[str, Any]:
        model = arrival.body.get("model", self.label)
        content = answer.content if answer.content is not None else f"{self.label} answers"
        return {"id": f"chatcmpl-{self.label}", "object": "chat.completion", "created": 0, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                             "finish_reason": "stop", "logprobs": None}],
                "usage": {"prompt_tokens": answer.prompt_tokens, "completion_tokens": answer.completion_tokens,
                          "total_tokens": answer.prompt_tokens + answer.completion_tokens}}


async def _read_request(reader: asyncio.StreamReader) -> Arrival | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    lines = head.decode("latin-1").split("\r\n")
    path = lines[0].split(" ")[1]
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    raw = await reader.readexactly(int(headers.get("content-length", "0")))
    return Arrival(time.monotonic(), path, headers, orjson.loads(raw) if raw else {})


async def _watch_close(reader: asyncio.StreamReader, arrival: Arrival) -> None:
    """Note when the client closes its side: a read that ends (EOF) or fails (reset)."""
    with contextlib.suppress(ConnectionError):
        while await reader.read(4096):
            pass
    arrival.closed_at = time.monotonic()
    arrival.gone.set()


async def _pause(seconds: float, arrival: Arrival) -> bool:
    """Wait seconds, or less when the client leaves meanwhile; False when it left."""
    if seconds > 0:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(arrival.gone.wait(), seconds)
    return not arrival.gone.is_set()


async def _respond(writer: asyncio.StreamWriter, status: int, body: bytes, extra: dict[str, str] | None = None) -> None:
    headers = {"content-type": "application/json", "content-length": str(len(body)), "connection": "close",
               **(extra or {})}
    writer.write(_status_line(status, headers) + body)
    await writer.drain()


async def _stream(sse: Sse, arrival: Arrival, writer: asyncio.StreamWriter) -> bool:
    headers = {"content-type": "text/event-stream", "cache-control": "no-cache", "transfer-encoding": "chunked",
               "connection": "close"}
    writer.write(_status_line(200, headers))
    await writer.drain()
    events = [*sse.events, DONE] if sse.done else list(sse.events)
    stop = min(k for k in (sse.cut_after, sse.stall_after, len(events)) if k is not None)
    if sse.together:
        _write_chunk(writer, b"".join(events[:stop]))
        await writer.drain()
    else:
        for index in range(stop):
            if index < len(sse.delays) and not await _pause(sse.delays[index], arrival):
                return False
            _write_chunk(writer, events[index])
            await writer.drain()
    if stop == sse.cut_after:
        if sse.reset:
            _linger_zero(writer)
        return sse.reset
    if stop == sse.stall_after:
        if sse.stall_s is None:
            await arrival.gone.wait()
        else:
            await _pause(sse.stall_s, arrival)
        return False
    writer.write(b"0\r\n\r\n")
    await writer.drain()
    return False


async def _flood(flood: Flood, arrival: Arrival, writer: asyncio.StreamWriter) -> bool:
    """Send a Flood piece by piece; True (reset) once the client has gone."""
    headers = {"content-type": flood.content_type, "connection": "close"}
    headers.update({"transfer-encoding": "chunked"} if flood.chunked else {"content-length": str(flood.size)})
    if flood.encoding is not None:
        headers["content-encoding"] = flood.encoding
    writer.write(_status_line(flood.status, headers))
    fill = flood.fill * max(1, PIECE // len(flood.fill))
    while arrival.sent < flood.size and not arrival.gone.is_set():
        if flood.hold_at is not None and arrival.sent >= flood.hold_at and not arrival.held.is_set():
            arrival.held.set()
            assert flood.go is not None
            await asyncio.to_thread(flood.go.wait, 30)
        source = flood.head[arrival.sent:arrival.sent + PIECE] if arrival.sent < len(flood.head) else fill
        piece = source[:min(len(source), flood.size - arrival.sent)]
        if flood.hold_at is not None and arrival.sent < flood.hold_at:
            piece = piece[:flood.hold_at - arrival.sent]
        if flood.chunked:
            _write_chunk(writer, piece)
        else:
            writer.write(piece)
        arrival.sent += len(piece)
        await writer.drain()
    if arrival.gone.is_set():
        return True
    if flood.chunked:
        writer.write(b"0\r\n\r\n")
    await writer.drain()
    return False


def _write_chunk(writer: asyncio.StreamWriter, data: bytes) -> None:
    if data:
        writer.write(b"%x\r\n%s\r\n" % (len(data), data))


def _status_line(status: int, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} {_reason(status)}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Status"


def _linger_zero(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


async def _close(writer: asyncio.StreamWriter, abort: bool) -> None:
    if abort:
        writer.transport.abort()
        return
    writer.close()
    with contextlib.suppress(ConnectionError, OSError):
        await writer.wait_closed()
