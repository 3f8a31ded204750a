"""OpenAI-compatible upstreams over one shared aiohttp session; the only importer of aiohttp.

vLLM, SGLang, llama.cpp, Ollama, TGI, OpenAI, DeepSeek and others speak this wire format, so
request and response bytes pass through, with only `model` (and the ask for stream usage) rewritten.
"""

from __future__ import annotations

import asyncio
import io
import re
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import orjson

from gateway.errors import (
    UpstreamCut,
    UpstreamError,
    UpstreamRedirect,
    UpstreamSilent,
    UpstreamStatus,
    UpstreamTimeout,
    UpstreamTooLarge,
    UpstreamUnavailable,
)
from gateway.upstreams import bounded, error_kinds
from gateway.upstreams.redact import Redactor
from gateway.upstreams.spec import Limits, UpstreamSpec

FORWARDED_HEADERS = frozenset({"traceparent", "tracestate", "x-request-id"})
JSON = b"application/json"
EXCERPT_CHARS = 300
OFFLOAD_BYTES = 1 << 20
STREAMED_BODY_BYTES = 1 << 20  # aiohttp warns that a bytes body over 1 MiB blocks the loop: such go as a file
TAGS = re.compile(r"<[^>]{0,1000}>")


def new_session() -> aiohttp.ClientSession:
    """The process's one upstream session: no pool limit of its own, bodies inflated by us, within limits, and no
    cookies: one an upstream sets in an answer to one tenant would otherwise go with every tenant's requests."""
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=60, enable_cleanup_closed=True)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None),
                                 auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar())


SILENCE_S = 1.0


class upstream_errors:
    """Map aiohttp's and the socket's exceptions to ours: the one boundary where they are met (body: while the
    answer is being read, when a broken connection is a cut).

    A class rather than a @contextmanager generator: it is entered twice a request, and a generator costs three
    times as much to set up and leave.
    """

    __slots__ = ("_body", "_started", "_upstream")

    def __init__(self, upstream: str, started: float | None = None, body: bool = False) -> None:
        self._upstream = upstream
        self._started = started
        self._body = body

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, _: object) -> None:
        if exc is None or isinstance(exc, UpstreamError) or not isinstance(exc, Exception):
            return
        ours = _ours(exc, self._upstream, self._started, self._body)
        if ours is not None:
            raise ours from exc


def _ours(exc: Exception, upstream: str, started: float | None, body: bool) -> UpstreamError | None:
    """Our error for an exception of aiohttp or the socket; None when it is neither (it goes on as it is)."""
    broken = UpstreamCut if body else UpstreamUnavailable
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return UpstreamTimeout(upstream)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        if started is not None and time.monotonic() - started >= SILENCE_S:
            return UpstreamSilent(upstream)
        return broken(upstream, "disconnected")
    if isinstance(exc, aiohttp.ClientPayloadError):
        return UpstreamCut(upstream, "response cut")
    if isinstance(exc, aiohttp.ClientError | OSError):
        return broken(upstream, type(exc).__name__)
    return None


class Exchange:
    """One upstream response in progress: status and content type known, body still to come, read within limits.

    Whatever it hands on has the upstream's key cut out: a stream event by event, so a key is never split.
    """

    __slots__ = ("_limits", "_redact", "_response", "content_type", "status", "upstream")

    redacted = True  # the dispatcher need not redact what this exchange hands on

    def __init__(self, upstream: str, response: aiohttp.ClientResponse, limits: Limits,
                 redact: Redactor) -> None:
        self.upstream = upstream
        self._response = response
        self._limits = limits
        self._redact = redact
        self.status = response.status
        self.content_type = response.headers.get("content-type", "application/json").encode("latin-1")

    def _announced(self) -> tuple[int | None, str | None]:
        """The body's announced length and content-encoding, once the length is checked against the limit."""
        length = self._response.content_length  # aiohttp parses the header again on every read
        if length is not None and length > self._limits.body_bytes:
            raise UpstreamTooLarge(self.upstream, "body", self._limits.body_bytes)
        return length, self._response.headers.get("content-encoding")

    async def read(self) -> bytes:
        """The whole body, its key cut out."""
        with upstream_errors(self.upstream, body=True):
            length, encoding = self._announced()
            if length is not None and (not encoding or encoding.lower() == "identity"):
                body = await self._response.read()  # its announced length is within body_bytes: read it in one go
            else:
                pieces = bounded.decoded(self.upstream, self._response.content.iter_any(), encoding, self._limits)
                body = await bounded.whole(pieces)
        if len(body) > OFFLOAD_BYTES:  # a body full of copies of the key takes seconds to cut: off the loop
            return await asyncio.to_thread(self._redact, body)
        return self._redact(body)

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives in whole events (an event over the limit fails), its key cut out."""
        spelled, redact = self._redact.stream(), self._redact
        with upstream_errors(self.upstream, body=True):
            encoding = self._announced()[1]
            if not bounded.is_plain(encoding):
                async for piece in bounded.events(self.upstream, self._response.content.iter_any(), encoding,
                                                  self._limits):
                    yield redact(spelled(piece) if spelled else piece)  # spelled first: it reads the text as sent
                return
            cutter = bounded.EventCutter(self.upstream, self._limits, wire=True)  # the common case: no generator
            async for chunk in self._response.content.iter_any():  # between the socket and the relay but this one
                piece = cutter.feed(chunk)
                if piece:
                    yield redact(spelled(piece) if spelled else piece)
            piece = cutter.rest()
            if piece:
                yield redact(spelled(piece) if spelled else piece)

    async def read_error(self) -> tuple[bytes, bool]:
        """The first error_body_bytes of an error body, its key cut out, and whether it went on (never read)."""
        with upstream_errors(self.upstream):
            pieces = bounded.decoded(self.upstream, self._response.content.iter_any(),
                                     self._response.headers.get("content-encoding"), self._limits)
            body, more = await bounded.prefix(pieces, self._limits.error_body_bytes)
        return self._redact(body), more

    def retry_after(self) -> str | None:
        """The Retry-After header, if the upstream sent one."""
        return self._response.headers.get("retry-after")

    def close(self) -> None:
        """Give the connection back when the body was read whole, else close it so the upstream sees us go."""
        if self._response.content.is_eof():
            self._response.release()
        else:
            self._response.close()


class OpenAIUpstream:
    """Sends requests to one OpenAI-compatible upstream; never follows a redirect."""

    exchange_type: type[Exchange] = Exchange  # what reads its answers (a subclass may check them)

    def __init__(self, name: str, spec: UpstreamSpec, session: aiohttp.ClientSession) -> None:
        self.name = name
        self.spec = spec
        self._session = session
        self._base = (spec.base_url or "").rstrip("/")
        self._headers = {"content-type": "application/json", "accept-encoding": bounded.ACCEPT_ENCODING}
        if spec.api_key is not None:
            self._headers["authorization"] = f"Bearer {spec.api_key.get_secret_value()}"
        self.redact = Redactor(spec.api_key.get_secret_value() if spec.api_key is not None else None)
        self._forward = FORWARDED_HEADERS | spec.forward_headers
        timeouts = spec.timeouts
        self._header_timeout = timeouts.per_try_s
        self._plain_timeout = aiohttp.ClientTimeout(total=timeouts.per_try_s, sock_connect=timeouts.connect_s)
        self._stream_timeout = aiohttp.ClientTimeout(sock_read=timeouts.stream_idle_s, sock_connect=timeouts.connect_s)

    def encode(self, body: Mapping[str, Any], stream: bool) -> bytes:
        """The request body for this upstream: its model name, and stream usage asked for."""
        rewritten = {**body, "model": self.spec.model}
        if stream and ("messages" in body or "prompt" in body):  # the Responses API reports usage unasked
            options = body.get("stream_options")
            rewritten["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
        return orjson.dumps(rewritten)

    async def send(self, path: str, body: bytes, client_headers: Mapping[str, str], stream: bool) -> Exchange:
        """Send a request and wait for the response headers; UpstreamError when that fails or is not a 2xx."""
        headers = self._headers
        extra = {k: client_headers[k] for k in self._forward if k in client_headers}
        if extra:
            headers = {**extra, **headers}
        data: bytes | io.BytesIO = io.BytesIO(body) if len(body) >= STREAMED_BODY_BYTES else body
        with upstream_errors(self.name, time.monotonic()):
            if stream:  # sock_read bounds each read of a stream, so its headers need a deadline of their own
                async with asyncio.timeout(self._header_timeout):
                    response = await self._session.post(self._base + path, data=data, headers=headers,
                                                        timeout=self._stream_timeout, allow_redirects=False)
            else:
                response = await self._session.post(self._base + path, data=data, headers=headers,
                                                    timeout=self._plain_timeout, allow_redirects=False)
        exchange = self.exchange_type(self.name, response, self.spec.limits, self.redact)
        if 300 <= exchange.status < 400:
            response.close()  # its Location names a place no policy does: never asked, never read
            raise UpstreamRedirect(self.name, exchange.status)
        if exchange.status >= 400:
            raise await self._failed(exchange)
        return exchange

    async def aclose(self) -> None:
        """Nothing of its own to close: the session is the process's (gateway/serving/app.py closes it)."""

    async def _failed(self, exchange: Exchange) -> UpstreamStatus:
        """The error for an error answer: its body bounded, redacted, and OpenAI-shaped JSON."""
        try:
            body, more = await exchange.read_error()
        except UpstreamError:
            body, more = b"", True
        finally:
            exchange.close()
        error = error_kinds.parse(body) if not more else None
        kind = error_kinds.kind_of(exchange.status, body, error)
        if error is None:
            body = wrapped(self.name, exchange.status, exchange.content_type, body, more)
        failed = UpstreamStatus(self.name, exchange.status, body, JSON)
        failed.retry_after = exchange.retry_after()
        failed.kind = kind
        failed.retryable = failed.retryable and kind is None  # a refusal of this request: the same again
        return failed


def wrapped(upstream: str, status: int, content_type: bytes, body: bytes, more: bool) -> bytes:
    """An error body that is not OpenAI's JSON (HTML, text, cut short) as OpenAI's error, with a short excerpt."""
    text = body[:EXCERPT_CHARS * 4].decode("utf-8", "replace")
    if b"html" in content_type.lower():
        text = TAGS.sub(" ", text)
    excerpt = " ".join(text.split())[:EXCERPT_CHARS]
    kind = content_type.split(b";")[0].decode("latin-1", "replace")[:64] or "no content type"
    message = (f"upstream '{upstream}' answered {status} with a {kind} body"
               f"{' (cut at the error body limit)' if more else ''}: {excerpt or '(empty)'}")
    error = {"message": message, "type": "invalid_request_error" if status < 500 else "server_error",
             "param": None, "code": f"upstream_http_{status}"}
    return orjson.dumps({"error": error})
