"""Raw servers on loopback for the upstream HTTP client's tests: each connection handed to a coroutine."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from gateway.upstreams.http import Origin, Pool, Response, header_lines

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"
FIXED = header_lines({"content-type": "application/json"})


class Raw:
    """A TCP server on loopback that hands each connection to handler and remembers what came."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.closed = asyncio.Event()  # set when a connection's client side closed (EOF or reset)
        self.server: asyncio.Server | None = None
        self.origin = Origin.of("http://127.0.0.1:1")
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        self.connections += 1
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await self.handler(reader, writer)
            await reader.read()  # until the client closes
        self.closed.set()
        writer.close()
        self._tasks.discard(task)

    async def stop(self) -> None:
        """Stop listening and end every connection."""
        assert self.server is not None
        self.server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for writer in self._writers:
            writer.transport.abort()
        await self.server.wait_closed()


async def request(reader: asyncio.StreamReader) -> bytes:
    """One request, head and body (the client always sends a content-length)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.startswith(b"content-length"))
    return head + await reader.readexactly(length)


@contextlib.asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[tuple[Raw, Pool]]:
    raw = Raw(handler)
    raw.server = await asyncio.start_server(raw._serve, "127.0.0.1", 0)
    raw.origin = Origin.of(f"http://127.0.0.1:{raw.server.sockets[0].getsockname()[1]}/v1")
    pool = Pool()
    try:
        yield raw, pool
    finally:
        await pool.close()
        await raw.stop()


async def post(pool: Pool, raw: Raw, body: bytes = b"{}", deadline_s: float = 5.0,
               headers: dict[str, str] | None = None) -> Response:
    deadline = asyncio.get_running_loop().time() + deadline_s
    response = await pool.post("u", raw.origin, "/chat/completions", FIXED, headers or {}, body, 5.0, deadline)
    await response.head()
    return response


async def eventually(predicate: Callable[[], bool]) -> None:
    """Poll predicate (state no event marks) until it holds; fail after five seconds."""
    deadline = asyncio.get_running_loop().time() + 5
    while not predicate():  # nothing to wait on: the client's pause is its own state
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.005)


async def answering(*answers: bytes) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for answer in answers:
            await request(reader)
            writer.write(answer)
            await writer.drain()
    return handler


async def chunks(response: Response) -> AsyncIterator[bytes]:
    while piece := await response.chunk():
        yield piece
