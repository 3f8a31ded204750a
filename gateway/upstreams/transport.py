"""The httpx transport under a translated upstream's litellm client: no redirect followed, every answer bounded.

litellm sends through it, so what the OpenAI path does in its exchange happens here, below litellm: a 3xx is
UpstreamRedirect (its Location never asked), a body is read within `limits` and inflated by us in bounded steps
(gateway/upstreams/bounded.py), an error body is cut at error_body_bytes. It also refuses the request of a call
that was given up before it reached the network (`Attempt`), so that litellm's work in its thread pool can end
on its own instead of being cancelled under it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextvars import ContextVar
from dataclasses import dataclass

import httpx

from gateway.errors import UpstreamRedirect, UpstreamTimeout, UpstreamTooLarge
from gateway.upstreams import bounded
from gateway.upstreams.spec import Limits

REWRITTEN = frozenset({b"content-encoding", b"content-length"})  # no longer true of a body inflated or cut here
COOKIES = frozenset({b"set-cookie", b"set-cookie2"})  # the client over this transport would keep them for everyone


@dataclass(slots=True)
class Attempt:
    """One call's progress as the transport sees it: whether it reached the network, and whether it was given up."""

    sending: bool = False
    abandoned: bool = False


ATTEMPT: ContextVar[Attempt | None] = ContextVar("switchyard_upstream_attempt", default=None)


class BoundedStream(httpx.AsyncByteStream):
    """An answer's body as its upstream sends it, inflated and within limits; an error body cut at its limit."""

    def __init__(self, upstream: str, raw: httpx.AsyncByteStream, encoding: str | None, limits: Limits,
                 error: bool) -> None:
        self._upstream = upstream
        self._raw = raw
        self._encoding = encoding
        self._limits = limits
        self._error = error

    async def __aiter__(self) -> AsyncIterator[bytes]:
        pieces = bounded.decoded(self._upstream, aiter(self._raw), self._encoding, self._limits)
        if not self._error:
            async for piece in pieces:
                yield piece
            return
        left = self._limits.error_body_bytes
        async for piece in pieces:
            yield piece[:left]
            left -= len(piece)
            if left <= 0:
                break  # the rest is never read: closing the response drops the connection

    async def aclose(self) -> None:
        await self._raw.aclose()


class BoundedTransport(httpx.AsyncBaseTransport):
    """Sends through pool (a transport of its own); closed by its owner (close_pool), never by the httpx clients
    over it."""

    def __init__(self, upstream: str, limits: Limits, pool: httpx.AsyncBaseTransport) -> None:
        self.upstream = upstream
        self.limits = limits
        self._pool = pool

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        attempt = ATTEMPT.get()
        if attempt is not None:
            if attempt.abandoned:
                raise UpstreamTimeout(self.upstream, "given up before it was sent")
            attempt.sending = True
        request.headers["accept-encoding"] = bounded.ACCEPT_ENCODING  # inflated here, within limits
        response = await self._pool.handle_async_request(request)
        status = response.status_code
        try:
            if 300 <= status < 400:
                raise UpstreamRedirect(self.upstream, status)  # its Location names a place no policy does
            length = response.headers.get("content-length", "")
            if status < 400 and length.isdigit() and int(length) > self.limits.body_bytes:
                raise UpstreamTooLarge(self.upstream, "body", self.limits.body_bytes)
        except Exception:
            await response.aclose()
            raise
        encoding = response.headers.get("content-encoding")
        headers = response.headers.raw
        if encoding or status >= 400:
            headers = [(name, value) for name, value in headers if name.lower() not in REWRITTEN | COOKIES]
        elif "set-cookie" in response.headers or "set-cookie2" in response.headers:
            headers = [(name, value) for name, value in headers if name.lower() not in COOKIES]
        raw = response.stream
        assert isinstance(raw, httpx.AsyncByteStream)  # an async transport's answer
        stream = BoundedStream(self.upstream, raw, encoding, self.limits, status >= 400)
        return httpx.Response(status, headers=headers, stream=stream, extensions=response.extensions)

    async def aclose(self) -> None:
        """Nothing: litellm closes the spare clients it makes over this transport, which must outlive them."""

    async def close_pool(self) -> None:
        """Close every connection of the pool."""
        await self._pool.aclose()
