"""The transport under litellm's client, against a loopback server: no redirect followed, every answer bounded."""

from __future__ import annotations

import gzip

import httpx
import pytest

from gateway.asgi import Receive, Scope, Send
from gateway.errors import UpstreamRedirect, UpstreamTimeout, UpstreamTooLarge
from gateway.upstreams import bounded
from gateway.upstreams.spec import Limits
from gateway.upstreams.transport import ATTEMPT, Attempt, BoundedTransport
from tests.conftest import Loop

TEXT = b"the same line of text, again and again\n" * 200


class Answers:
    """Answers by path: a redirect, a declared big body, a gzipped one, a long error; records what it was asked."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []
        self.peers: list[int] = []  # the client's port of each request: one connection kept alive reads as one

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        self.seen.append((scope["path"], headers.get("accept-encoding", "")))
        self.peers.append(scope["client"][1])
        status, extra, body = {
            "/redirect": (302, [(b"location", b"http://elsewhere.invalid/")], b""),
            "/big": (200, [], b"x" * 5000),
            "/gzip": (200, [(b"content-encoding", b"gzip")], gzip.compress(TEXT)),
            "/error": (500, [(b"content-type", b"application/json")], b'{"error": "' + b"e" * 5000 + b'"}'),
            "/cookie": (200, [(b"set-cookie", b"session=tenant-a; Path=/")], b"plain"),
            "/error-cookie": (500, [(b"set-cookie", b"session=tenant-a; Path=/")], b"{}"),
            "/gzip-cookie": (200, [(b"content-encoding", b"gzip"), (b"set-cookie", b"session=tenant-a; Path=/")],
                             gzip.compress(TEXT)),
        }.get(scope["path"], (200, [], b"plain"))
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-length", str(len(body)).encode()), *extra]})
        await send({"type": "http.response.body", "body": body})


@pytest.fixture
def served(loop: Loop) -> tuple[Answers, str]:
    app = Answers()
    return app, loop.serve(app).url


def get(loop: Loop, url: str, limits: Limits | None = None, attempt: Attempt | None = None) -> httpx.Response:
    async def run() -> httpx.Response:
        transport = BoundedTransport("primary", limits or Limits(), httpx.AsyncHTTPTransport())
        ATTEMPT.set(attempt)
        try:
            async with httpx.AsyncClient(transport=transport) as client:
                response = await client.get(url)
                await response.aread()
                return response
        finally:
            await transport.close_pool()

    result: httpx.Response = loop.run(run())
    return result


@pytest.mark.parametrize("path", ["/cookie", "/gzip-cookie", "/error-cookie"])
def test_no_cookie_an_upstream_sets_reaches_the_client_over_the_transport(loop: Loop, served: tuple[Answers, str],
                                                                          path: str) -> None:
    """litellm's client is one per upstream, every tenant's: a cookie it kept would go with all their requests."""
    async def run() -> tuple[httpx.Response, httpx.Cookies]:
        transport = BoundedTransport("primary", Limits(), httpx.AsyncHTTPTransport())
        try:
            async with httpx.AsyncClient(transport=transport) as client:
                response = await client.get(served[1].replace("127.0.0.1", "localhost") + path)
                await response.aread()
                return response, client.cookies
        finally:
            await transport.close_pool()

    response, kept = loop.run(run())
    assert "set-cookie" not in response.headers
    assert not kept


def test_a_redirect_is_refused_without_asking_where_it_points(loop: Loop, served: tuple[Answers, str]) -> None:
    app, url = served
    with pytest.raises(UpstreamRedirect) as caught:
        get(loop, url + "/redirect")
    assert caught.value.status == 302
    assert [path for path, _ in app.seen] == ["/redirect"]


def test_an_answer_declared_over_the_body_limit_is_refused(loop: Loop, served: tuple[Answers, str]) -> None:
    with pytest.raises(UpstreamTooLarge) as caught:
        get(loop, served[1] + "/big", Limits(body_bytes=4096))
    assert (caught.value.reason, caught.value.limit) == ("body_too_large", 4096)
    assert get(loop, served[1] + "/big", Limits(body_bytes=8192)).content == b"x" * 5000


def test_a_gzipped_answer_is_inflated_here_and_its_headers_no_longer_claim_gzip(
        loop: Loop, served: tuple[Answers, str]) -> None:
    app, url = served
    response = get(loop, url + "/gzip")
    assert response.content == TEXT
    assert "content-encoding" not in response.headers
    assert response.headers.get("content-length") != str(len(gzip.compress(TEXT)))
    assert app.seen[-1] == ("/gzip", bounded.ACCEPT_ENCODING)


def test_a_gzipped_answer_that_inflates_past_its_limit_is_refused(loop: Loop, served: tuple[Answers, str]) -> None:
    with pytest.raises(UpstreamTooLarge) as caught:
        get(loop, served[1] + "/gzip", Limits(decompressed_bytes=1024))
    assert caught.value.reason == "decompressed_body_too_large"


def test_an_error_body_is_cut_at_its_limit(loop: Loop, served: tuple[Answers, str]) -> None:
    response = get(loop, served[1] + "/error", Limits(error_body_bytes=100))
    assert response.status_code == 500
    assert response.content == (b'{"error": "' + b"e" * 5000)[:100]
    assert "content-length" not in response.headers


def test_a_call_given_up_before_it_was_sent_never_reaches_the_upstream(loop: Loop,
                                                                        served: tuple[Answers, str]) -> None:
    app, url = served
    with pytest.raises(UpstreamTimeout, match="given up before it was sent"):
        get(loop, url + "/", attempt=Attempt(abandoned=True))
    assert app.seen == []
    attempt = Attempt()
    assert get(loop, url + "/", attempt=attempt).content == b"plain"
    assert attempt.sending


def test_closing_a_client_over_the_transport_leaves_its_pool_open(loop: Loop, served: tuple[Answers, str]) -> None:
    app, url = served

    async def run() -> list[bytes]:
        transport = BoundedTransport("primary", Limits(), httpx.AsyncHTTPTransport())
        bodies = []
        for _ in range(2):  # litellm closes the spare clients it makes; the pool must outlive them
            async with httpx.AsyncClient(transport=transport) as client:
                bodies.append((await client.get(url + "/")).content)
        await transport.close_pool()
        return bodies

    assert loop.run(run()) == [b"plain", b"plain"]
    assert app.peers[0] == app.peers[1]  # the second client reused the first one's connection
