"""Reading an upstream's body within limits: wire bytes, inflated bytes, one event; a gzip bomb fails fast."""

from __future__ import annotations

import asyncio
import gzip
import zlib
from collections.abc import AsyncIterator

import pytest

from gateway.errors import UpstreamMalformed, UpstreamTooLarge
from gateway.tools.standin.hostile import gzip_bomb
from gateway.upstreams import bounded
from gateway.upstreams.spec import Limits


async def arriving(data: bytes, size: int = 4096) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i:i + size]


def read(data: bytes, encoding: str | None, limits: Limits) -> list[bytes]:
    async def run() -> list[bytes]:
        return [piece async for piece in bounded.decoded("u", arriving(data), encoding, limits)]
    return asyncio.run(run())


LIMITS = Limits(body_bytes=1 << 20, decompressed_bytes=4 << 20)


@pytest.mark.parametrize("encoding", [None, "identity", "gzip", "deflate", "raw-deflate"])
def test_every_encoding_reads_back_the_same_body(encoding: str | None) -> None:
    body = b'{"text": "' + b"hello " * 5000 + b'"}'
    sent = {None: body, "identity": body, "gzip": gzip.compress(body), "deflate": zlib.compress(body),
            "raw-deflate": zlib.compress(body, wbits=-15)}[encoding]
    header = "deflate" if encoding == "raw-deflate" else encoding
    assert b"".join(read(sent, header, LIMITS)) == body


def test_a_gzip_bomb_fails_at_the_decompressed_limit_in_small_pieces() -> None:
    bomb = gzip_bomb(64)  # 64 MiB of zeros in about 64 KB
    pieces: list[int] = []

    async def run() -> None:
        async for piece in bounded.decoded("u", arriving(bomb), "gzip", LIMITS):
            pieces.append(len(piece))
    with pytest.raises(UpstreamTooLarge) as caught:
        asyncio.run(run())
    assert caught.value.reason == "decompressed_body_too_large"
    assert max(pieces) <= bounded.PIECE
    assert sum(pieces) <= LIMITS.decompressed_bytes


def test_a_body_over_the_wire_limit_fails() -> None:
    with pytest.raises(UpstreamTooLarge) as caught:
        read(b"x" * ((1 << 20) + 1), None, LIMITS)
    assert caught.value.reason == "body_too_large"


@pytest.mark.parametrize(("encoding", "data"), [("br", b"\x1b"), ("gzip", b"not gzip at all"),
                                                 ("zstd", b"\x28\xb5")])
def test_an_encoding_not_asked_for_or_a_broken_body_is_malformed(encoding: str, data: bytes) -> None:
    with pytest.raises(UpstreamMalformed):
        read(data, encoding, LIMITS)


def test_events_are_cut_whole_and_an_endless_one_fails() -> None:
    async def run(data: bytes) -> list[bytes]:
        return [p async for p in bounded.events("u", arriving(data, 7), None, Limits(sse_event_bytes=64))]
    assert asyncio.run(run(b'data: {"a": 1}\n\ndata: {"b": 2}\n\n')) == [b'data: {"a": 1}\n\n', b'data: {"b": 2}\n\n']
    with pytest.raises(UpstreamTooLarge) as caught:
        asyncio.run(run(b"data: " + b"x" * 100))
    assert caught.value.reason == "event_too_large"


def test_a_compressed_stream_is_inflated_then_cut_into_events() -> None:
    data = b"".join(b'data: {"n": %d}\n\n' % i for i in range(100))
    async def run() -> list[bytes]:
        return [p async for p in bounded.events("u", arriving(gzip.compress(data), 5), "gzip", LIMITS)]
    pieces = asyncio.run(run())
    assert b"".join(pieces) == data
    assert all(p.endswith(b"\n\n") for p in pieces)


def test_a_stream_over_the_body_limit_fails_however_small_its_events() -> None:
    data = b'data: {"n": 1}\n\n' * 1000
    async def run() -> list[bytes]:
        return [p async for p in bounded.events("u", arriving(data), None, Limits(body_bytes=5000))]
    with pytest.raises(UpstreamTooLarge) as caught:
        asyncio.run(run())
    assert caught.value.reason == "body_too_large"


def test_prefix_stops_at_the_limit_and_says_there_was_more() -> None:
    async def run(data: bytes) -> tuple[bytes, bool]:
        return await bounded.prefix(arriving(data, 10), 25)
    assert asyncio.run(run(b"y" * 100)) == (b"y" * 25, True)
    assert asyncio.run(run(b"y" * 20)) == (b"y" * 20, False)
