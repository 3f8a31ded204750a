"""A translated upstream's answers as exchanges: whole (Answer) or streamed (EventStream), and what its client
has open (Lifetimes), so that the client closes its connections only once none is in use."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractContextManager
from typing import Any

from gateway.upstreams.translate import EVENT_STREAM

JSON = b"application/json"
Errors = Callable[[str], AbstractContextManager[None]]  # maps a library's exceptions to ours, for one upstream


class Lifetimes:
    """What one client has open: exchanges not yet closed and calls given up on; idle once none is left."""

    def __init__(self) -> None:
        self.open = 0
        self.tasks: set[asyncio.Task[Any]] = set()
        self.idle = asyncio.Event()
        self.idle.set()

    def opened(self) -> None:
        self.open += 1
        self.idle.clear()

    def closed(self) -> None:
        self.open -= 1
        self._check()

    def keep(self, task: asyncio.Task[Any], ended: Callable[[asyncio.Task[Any]], None] | None = None) -> None:
        """Hold task until it ends (the loop holds tasks weakly), then hand it to ended."""
        self.tasks.add(task)
        self.idle.clear()

        def done(finished: asyncio.Task[Any]) -> None:
            self.tasks.discard(finished)
            if ended is not None:
                ended(finished)
            self._check()

        task.add_done_callback(done)

    def _check(self) -> None:
        if not self.open and not self.tasks:
            self.idle.set()


class Answer:
    """A whole chat.completion, already translated."""

    __slots__ = ("_body", "content_type", "status", "upstream")

    def __init__(self, upstream: str, body: bytes) -> None:
        self.upstream = upstream
        self.status = 200
        self.content_type = JSON
        self._body = body


    async def read(self) -> bytes:
        return self._body

    async def chunks(self) -> AsyncIterator[bytes]:
        yield self._body

    def retry_after(self) -> str | None:
        return None

    def close(self) -> None:
        """Nothing to release: litellm read the body whole."""


class EventStream:
    """A stream translated to OpenAI server-sent events as it arrives; open in its client's Lifetimes until closed.

    Whatever goes wrong while it is read passes through errors (mid-stream, a cut or a timeout).
    """

    __slots__ = ("_aclose", "_errors", "_frames", "_lifetimes", "_open", "content_type", "status", "upstream")

    def __init__(self, upstream: str, frames: AsyncIterator[bytes], aclose: Callable[[], Awaitable[Any]],
                 lifetimes: Lifetimes, errors: Errors) -> None:
        self.upstream = upstream
        self._errors = errors
        self.status = 200
        self.content_type = EVENT_STREAM
        self._frames = frames
        self._aclose = aclose
        self._lifetimes = lifetimes
        self._open = True
        lifetimes.opened()


    async def read(self) -> bytes:
        return b"".join([frame async for frame in self.chunks()])

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            with self._errors(self.upstream):
                async for frame in self._frames:
                    yield frame
        finally:
            if self._open:
                self._open = False
                await _quietly(self._aclose)
                self._lifetimes.closed()

    def retry_after(self) -> str | None:
        return None

    def close(self) -> None:
        """Close the upstream response unless the stream ran to its end, so the provider sees us go."""
        if self._open:
            self._open = False
            self._lifetimes.keep(asyncio.get_running_loop().create_task(_quietly(self._aclose)))
            self._lifetimes.closed()


async def _quietly(aclose: Callable[[], Awaitable[Any]]) -> None:
    try:
        await aclose()
    except Exception:  # the connection is being dropped anyway
        return
