"""Which connections are kept, reused, swept and closed; TLS verified; a refused connection."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest

from gateway.errors import UpstreamUnavailable
from gateway.upstreams.http import Origin, Pool
from tests.certificates import authority, certificate
from tests.upstreams.http.raw import FIXED, OK, answering, post, serving


async def test_a_connection_is_kept_for_the_next_request() -> None:
    async with serving(await answering(OK, OK, OK)) as (raw, pool):
        for _ in range(3):
            response = await post(pool, raw)
            assert await response.read() == b"{}"
            response.release()
    assert raw.connections == 1


async def test_bytes_after_an_answer_keep_its_connection_from_the_pool() -> None:
    async with serving(await answering(OK + b"HTTP/1.1 200 OK\r\n\r\n", OK)) as (raw, pool):
        response = await post(pool, raw)
        await response.read()
        response.release()
        again = await post(pool, raw)
        assert await again.read() == b"{}"
        again.release()
    assert raw.connections == 2


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
