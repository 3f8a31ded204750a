"""How an answer is read: framings, interim answers, broken answers, deadlines, silences and a paused socket."""

from __future__ import annotations

import asyncio

import pytest

from gateway.errors import UpstreamCut, UpstreamMalformed, UpstreamTimeout, UpstreamUnavailable
from gateway.upstreams.http import response as http1
from tests.upstreams.http.raw import chunks, eventually, post, request, serving


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


async def test_a_request_the_upstream_never_reads_ends_at_its_deadline() -> None:
    async def handler(reader: asyncio.StreamReader, _: asyncio.StreamWriter) -> None:
        await asyncio.Event().wait()  # reads nothing, answers nothing

    async with serving(handler) as (raw, pool):
        with pytest.raises(UpstreamTimeout):
            await post(pool, raw, b"x" * (64 << 20), deadline_s=0.3)  # far more than the sockets between hold
