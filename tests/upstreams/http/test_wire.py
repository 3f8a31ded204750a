"""What the client writes: origins read from URLs, and heads whose headers cannot change the request."""

from __future__ import annotations

import asyncio

import pytest

from gateway.errors import UpstreamUnavailable
from gateway.upstreams.http import Origin, header_lines
from tests.upstreams.http.raw import OK, answering, post, request, serving


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
