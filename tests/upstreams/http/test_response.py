"""How an answer is read: framings, interim answers, broken answers, deadlines, silences and a paused socket."""

from __future__ import annotations

import asyncio

import pytest

from gateway.errors import UpstreamCut, UpstreamMalformed, UpstreamTimeout, UpstreamUnavailable
from gateway.upstreams.http import response as http1
from tests.upstreams.http.raw import answering, chunks, eventually, post, request, serving


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
        await eventually(lambda: response._conn.paused)  # the client stops reading...
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


async def test_a_status_below_100_is_no_answer() -> None:
    """httptools reads "000" as a status; taken as "no head yet" it would hold the try past every deadline."""
    for status in (b"000", b"099"):
        async with serving(await answering(b"HTTP/1.1 " + status + b" X\r\ncontent-length: 0\r\n\r\n")) as (raw,
                                                                                                        pool):
            with pytest.raises(UpstreamMalformed, match="status"):
                await post(pool, raw)


async def test_trailers_past_the_head_limit_fail_the_answer() -> None:
    """Trailer bytes are neither head nor body: without a bound of their own they would pass every limit."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\nx-pad: ")
        for _ in range(64):
            writer.write(b"a" * (1 << 16))
            await writer.drain()

    async with serving(handler) as (raw, pool):
        response = await post(pool, raw)
        response.stream(5.0)
        with pytest.raises(UpstreamMalformed, match="trailers"):
            _ = [piece async for piece in chunks(response)]


async def test_an_answer_before_the_request_is_all_written_ends_the_write() -> None:
    """The upstream refuses the body from its head and reads no more: the try ends with the answer."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\n\r\n")
        await writer.drain()
        await asyncio.Event().wait()  # reads nothing more

    async with serving(handler) as (raw, pool):
        response = await post(pool, raw, b"x" * (64 << 20), deadline_s=30)
        assert (response.status, await response.read()) == (413, b"")
        response.release()
        assert response._conn.closed  # never pooled: the rest of the body would lead the next request


async def test_a_slow_reader_does_not_make_a_steady_upstream_silent() -> None:
    """While the socket is paused for the reader, the upstream cannot be heard: its silence is not counted."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for _ in range(100_000):
            writer.write(b"1000\r\n" + b"x" * 4096 + b"\r\n")
            await writer.drain()

    async with serving(handler) as (raw, pool):
        response = await post(pool, raw)
        response.stream(0.05)
        await eventually(lambda: response._conn.paused)
        loop = asyncio.get_running_loop()
        resumed = loop.create_future()
        loop.call_later(0.3, resumed.set_result, None)  # the reader is away six silences long
        await resumed
        assert len(await response.chunk()) >= http1.BUFFER_BYTES - (1 << 16)
        assert await response.chunk()  # the upstream is still heard from, not timed out


async def test_a_flood_of_tiny_pieces_is_paused_by_what_it_holds() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for _ in range(200):
            writer.write(b"1\r\nx\r\n" * 2000)
            await writer.drain()

    async with serving(handler) as (raw, pool):
        response = await post(pool, raw)
        response.stream(5.0)
        await eventually(lambda: response._conn.paused)
        assert len(response._chunks) <= http1.PIECES  # the rest gathered in one, holding only its bytes
        assert response._buffered < http1.BUFFER_BYTES + (1 << 18)  # one read past the limit at most
        held = response._buffered
        piece = await response.chunk()
        assert len(piece) == held
        assert set(piece) == {ord("x")}


async def test_a_broken_body_is_a_cut_and_closing_the_pool_cuts_an_answer_being_read() -> None:
    broken = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}\r\nzz\r\n"
    async with serving(await answering(broken)) as (raw, pool):
        with pytest.raises(UpstreamCut, match="not HTTP"):  # at the head, or at the body if it came later
            await (await post(pool, raw)).read()
    async with serving(await answering(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n{")) as (raw, pool):
        waiting = await post(pool, raw)
        await pool.close()
        with pytest.raises(UpstreamCut):
            await waiting.read()
