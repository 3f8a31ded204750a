"""The upstream HTTP/1.1 client against raw servers on loopback: what it writes, what it reads, and where it stops."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from gateway.errors import UpstreamCut, UpstreamMalformed, UpstreamTimeout, UpstreamUnavailable
from gateway.upstreams import http1
from gateway.upstreams.http1 import Origin, Pool, header_lines
from tests.certificates import authority, certificate

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
               headers: dict[str, str] | None = None) -> http1.Response:
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


def test_an_origin_is_read_from_a_url_once() -> None:
    assert Origin.of("http://10.0.0.1:8000/v1/") == Origin(False, "10.0.0.1", 8000, "10.0.0.1:8000", "/v1")
    assert Origin.of("https://api.openai.com/v1") == Origin(True, "api.openai.com", 443, "api.openai.com", "/v1")
    assert Origin.of("http://[::1]:9000").authority == "[::1]:9000"
    for bad in ("ftp://x/v1", "http:///v1", "/v1"):
        with pytest.raises(ValueError, match="not an http"):
            Origin.of(bad)


def test_a_header_that_would_split_the_request_is_refused() -> None:
    for headers in ({"x-a": "1\r\nx-evil: 1"}, {"x-a": "1\n"}, {"x-a": "\0"}, {"x a": "1"}, {"x:a": "1"},
                    {"x-a": "\u20ac"}, {"Transfer-Encoding": "chunked"}, {"host": "elsewhere"},
                    {"connection": "close"}):
        with pytest.raises(ValueError, match=r"header|latin-1"):
            header_lines(headers)
    assert header_lines({"x-a": "b c", "traceparent": "00-ab-cd-01"}) == b"x-a: b c\r\ntraceparent: 00-ab-cd-01\r\n"


async def test_it_writes_one_post_with_host_length_and_headers() -> None:
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await request(reader))
        writer.write(OK)

    async with serving(handler) as (raw, pool):
        response = await post(pool, raw, b'{"a":1}', headers={"x-request-id": "r1"})
        assert (response.status, await response.read()) == (200, b"{}")
        response.release()
    port = raw.origin.port
    assert seen == [b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:%d\r\ncontent-type: application/json\r\n"
                    b"x-request-id: r1\r\ncontent-length: 7\r\n\r\n{\"a\":1}" % port]


async def test_a_bad_forwarded_header_sends_nothing() -> None:
    async with serving(await answering(OK)) as (raw, pool):
        with pytest.raises(UpstreamUnavailable):
            await post(pool, raw, headers={"traceparent": "x\r\nhost: elsewhere"})
    assert raw.connections == 0


async def test_a_connection_is_kept_for_the_next_request() -> None:
    async with serving(await answering(OK, OK, OK)) as (raw, pool):
        for _ in range(3):
            response = await post(pool, raw)
            assert await response.read() == b"{}"
            response.release()
    assert raw.connections == 1


async def test_a_chunked_body_an_interim_answer_and_a_body_until_close_are_read() -> None:
    chunked = (b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n"
               b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
    until_close = b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nthe rest"

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await request(reader)
        writer.write(chunked)
        await request(reader)
        writer.write(until_close)
        writer.close()

    async with serving(handler) as (raw, pool):
        first = await post(pool, raw)
        assert (first.status, "link" in first.headers, await first.read()) == (200, False, b"abcde")
        first.release()
        second = await post(pool, raw)
        pieces = [piece async for piece in chunks(second)]
        assert b"".join(pieces) == b"the rest"
        assert not second.keep_alive
        second.release()


async def chunks(response: http1.Response) -> AsyncIterator[bytes]:
    while piece := await response.chunk():
        yield piece


@pytest.mark.parametrize(("answer", "error"), [
    (b"", UpstreamUnavailable),  # closed before answering
    (b"SMTP ready\r\n\r\n", UpstreamUnavailable),  # not HTTP
    (b"HTTP/1.1 200 OK\r\nx-long: " + b"a" * (http1.HEAD_BYTES + 10), UpstreamMalformed),  # a head without end
    (b"HTTP/1.1 101 Switching Protocols\r\nupgrade: h2c\r\nconnection: upgrade\r\n\r\n", UpstreamMalformed),
])
async def test_an_answer_that_is_not_one_fails_and_closes(answer: bytes, error: type[Exception]) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await request(reader)
        writer.write(answer)
        await writer.drain()
        if not answer or answer.startswith(b"SMTP"):
            writer.close()

    async with serving(handler) as (raw, pool):
        with pytest.raises(error):
            await post(pool, raw)
        await asyncio.wait_for(raw.closed.wait(), 5)


async def test_a_body_cut_short_is_a_cut() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly this")
        await writer.drain()
        writer.close()

    async with serving(handler) as (raw, pool):
        response = await post(pool, raw)
        with pytest.raises(UpstreamCut):
            await response.read()


async def test_a_plain_answer_ends_at_its_deadline_and_a_stream_after_its_silence() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nsome")  # and then nothing

    async with serving(handler) as (raw, pool):
        plain = await post(pool, raw, deadline_s=0.3)
        with pytest.raises(UpstreamTimeout):
            await plain.read()
        await asyncio.wait_for(raw.closed.wait(), 5)
        streamed = await post(pool, raw)
        streamed.stream(0.2)
        assert await streamed.chunk() == b"some"
        with pytest.raises(UpstreamTimeout):
            await streamed.chunk()


async def test_no_head_before_the_deadline_is_a_timeout() -> None:
    async def handler(reader: asyncio.StreamReader, _: asyncio.StreamWriter) -> None:
        await request(reader)

    async with serving(handler) as (raw, pool):
        with pytest.raises(UpstreamTimeout):
            await post(pool, raw, deadline_s=0.2)


async def test_an_unread_body_pauses_the_socket_instead_of_filling_memory() -> None:
    body = b"x" * (128 * http1.BUFFER_BYTES)  # far more than the sockets between hold
    written = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(body) + body)
        await writer.drain()
        written.set()

    async with serving(handler) as (raw, pool):
        response = await post(pool, raw)
        response.stream(5.0)
        await eventually(lambda: response._conn._paused)  # the client stops reading...
        assert not written.is_set()  # ...so the server cannot finish writing
        assert response._buffered < 2 * http1.BUFFER_BYTES + (1 << 18)
        assert b"".join([piece async for piece in chunks(response)]) == body
        response.release()


async def test_bytes_after_an_answer_keep_its_connection_from_the_pool() -> None:
    async with serving(await answering(OK + b"HTTP/1.1 200 OK\r\n\r\n", OK)) as (raw, pool):
        response = await post(pool, raw)
        await response.read()
        response.release()
        again = await post(pool, raw)
        assert await again.read() == b"{}"
        again.release()
    assert raw.connections == 2


async def test_giving_up_mid_answer_closes_the_connection() -> None:
    arrived = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, _: asyncio.StreamWriter) -> None:
        await request(reader)
        arrived.set()

    async with serving(handler) as (raw, pool):
        task = asyncio.create_task(post(pool, raw))
        await asyncio.wait_for(arrived.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(raw.closed.wait(), 5)


async def test_idle_connections_are_closed_after_their_time_and_at_close() -> None:
    async with serving(await answering(OK)) as (raw, pool):
        pool.idle_s = 0.05
        response = await post(pool, raw)
        await response.read()
        response.release()
        await asyncio.wait_for(raw.closed.wait(), 5)
    async with serving(await answering(OK)) as (raw, pool):
        response = await post(pool, raw)
        await response.read()
        response.release()
        await pool.close()
        await asyncio.wait_for(raw.closed.wait(), 5)
        with pytest.raises(UpstreamUnavailable):
            await post(pool, raw)


async def test_a_refused_connection_is_unavailable() -> None:
    async with serving(await answering(OK)) as (raw, pool):
        origin = raw.origin
        assert raw.server is not None
        await raw.stop()
        with pytest.raises(UpstreamUnavailable):
            await pool.post("u", origin, "/x", FIXED, {}, b"", 5.0, asyncio.get_running_loop().time() + 5)


async def test_an_https_origin_is_spoken_to_over_tls_and_its_certificate_checked(tmp_path: Path) -> None:
    ca = authority(tmp_path)
    cert, key = certificate(tmp_path, "upstream")
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(cert, key)
    server = await asyncio.start_server(await answering(OK, OK), "127.0.0.1", 0, ssl=served)
    origin = Origin.of(f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1")
    deadline = asyncio.get_running_loop().time() + 5
    trusted, untrusted = Pool(tls=ssl.create_default_context(cafile=ca)), Pool()
    try:
        response = await trusted.post("u", origin, "/x", FIXED, {}, b"{}", 5.0, deadline)
        await response.head()
        assert await response.read() == b"{}"
        response.release()
        with pytest.raises(UpstreamUnavailable, match="SSLCertVerificationError"):
            await untrusted.post("u", origin, "/x", FIXED, {}, b"{}", 5.0, deadline)
    finally:
        await trusted.close()
        await untrusted.close()
        server.close()


async def test_a_second_release_never_gives_a_connection_to_two_requests() -> None:
    async with serving(await answering(OK, OK, OK)) as (raw, pool):
        first = await post(pool, raw)
        await first.read()
        first.release()
        second = await post(pool, raw)  # on the connection the first gave back
        first.release()
        first.fail(UpstreamUnavailable("u"))
        third = await post(pool, raw)
        assert second._conn is not third._conn
        assert (await second.read(), await third.read()) == (b"{}", b"{}")
