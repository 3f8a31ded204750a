"""OpenAI-compatible upstreams over the process's one connection pool (gateway/upstreams/http/).

vLLM, SGLang, llama.cpp, Ollama, TGI, OpenAI, DeepSeek and others speak this wire format, so
request and response bytes pass through, with only `model` (and the ask for stream usage) rewritten.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson

from gateway.errors import UpstreamError, UpstreamRedirect, UpstreamStatus, UpstreamTooLarge, UpstreamUnavailable
from gateway.upstreams import bounded, error_kinds
from gateway.upstreams.http import Origin, Pool, Response, header_lines
from gateway.upstreams.redact import Redactor
from gateway.upstreams.spec import Limits, UpstreamSpec

FORWARDED_HEADERS = frozenset({"traceparent", "tracestate", "x-request-id"})
JSON = b"application/json"
USER_AGENT = "switchyard"
EXCERPT_CHARS = 300
OFFLOAD_BYTES = 1 << 20
TAGS = re.compile(r"<[^>]{0,1000}>")


class Exchange:
    """One upstream response in progress: status and content type known, body still to come, read within limits.

    Whatever it hands on has the upstream's key cut out: a stream event by event, so a key is never split.
    """

    __slots__ = ("_limits", "_redact", "_response", "content_type", "status", "upstream")

    redacted = True  # the dispatcher need not redact what this exchange hands on

    def __init__(self, upstream: str, response: Response, limits: Limits,
                 redact: Redactor) -> None:
        self.upstream = upstream
        self._response = response
        self._limits = limits
        self._redact = redact
        self.status = response.status
        self.content_type = response.headers.get("content-type", "application/json").encode("latin-1")

    def _announced(self) -> tuple[int | None, str | None]:
        """The body's announced length and content-encoding, once the length is checked against the limit."""
        declared = self._response.headers.get("content-length")
        length = int(declared) if declared is not None else None  # the parser has checked its digits
        if length is not None and length > self._limits.body_bytes:
            raise UpstreamTooLarge(self.upstream, "body", self._limits.body_bytes)
        return length, self._response.headers.get("content-encoding")

    async def _pieces(self) -> AsyncIterator[bytes]:
        """The body off the wire, as it arrives."""
        while chunk := await self._response.chunk():
            yield chunk

    async def read(self) -> bytes:
        """The whole body, its key cut out."""
        length, encoding = self._announced()
        if length is not None and (not encoding or encoding.lower() == "identity"):
            body = await self._response.read()  # its announced length is within body_bytes: read it in one go
        else:
            body = await bounded.whole(bounded.decoded(self.upstream, self._pieces(), encoding, self._limits))
        if len(body) > OFFLOAD_BYTES:  # a body full of copies of the key takes seconds to cut: off the loop
            return await asyncio.to_thread(self._redact, body)
        return self._redact(body)

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives in whole events (an event over the limit fails), its key cut out."""
        spelled, redact = self._redact.stream(), self._redact
        encoding = self._announced()[1]
        if not bounded.is_plain(encoding):
            async for piece in bounded.events(self.upstream, self._pieces(), encoding, self._limits):
                yield redact(spelled(piece) if spelled else piece)  # spelled first: it reads the text as sent
            return
        cutter = bounded.EventCutter(self.upstream, self._limits, wire=True)  # the common case: no generator
        response = self._response
        while chunk := await response.chunk():  # between the socket and the relay but this one
            piece = cutter.feed(chunk)
            if piece:
                yield redact(spelled(piece) if spelled else piece)
        piece = cutter.rest()
        if piece:
            yield redact(spelled(piece) if spelled else piece)

    async def read_error(self) -> tuple[bytes, bool]:
        """The first error_body_bytes of an error body, its key cut out, and whether it went on (never read)."""
        pieces = bounded.decoded(self.upstream, self._pieces(), self._response.headers.get("content-encoding"),
                                 self._limits)
        body, more = await bounded.prefix(pieces, self._limits.error_body_bytes)
        return self._redact(body), more

    def retry_after(self) -> str | None:
        """The Retry-After header, if the upstream sent one."""
        return self._response.headers.get("retry-after")

    def close(self) -> None:
        """Give the connection back when the body was read whole, else close it so the upstream sees us go."""
        self._response.release()


class OpenAIUpstream:
    """Sends requests to one OpenAI-compatible upstream; never follows a redirect."""

    exchange_type: type[Exchange] = Exchange  # what reads its answers (a subclass may check them)

    def __init__(self, name: str, spec: UpstreamSpec, pool: Pool) -> None:
        self.name = name
        self.spec = spec
        self._pool = pool
        self._origin = Origin.of(spec.base_url or "")
        self._headers = {"content-type": "application/json", "accept-encoding": bounded.ACCEPT_ENCODING,
                         "user-agent": USER_AGENT}
        if spec.api_key is not None:
            self._headers["authorization"] = f"Bearer {spec.api_key.get_secret_value()}"
        self.redact = Redactor(spec.api_key.get_secret_value() if spec.api_key is not None else None)
        self._forward = FORWARDED_HEADERS | spec.forward_headers
        self._timeouts = spec.timeouts
        self._fixed = b""

    @property
    def fixed_headers(self) -> bytes:
        """The headers every request carries, on the wire; UpstreamUnavailable (not retried) when one cannot be."""
        if not self._fixed:
            try:
                self._fixed = header_lines(self._headers)
            except ValueError:
                unfit = UpstreamUnavailable(self.name, "a header of its own (its key?) is not fit to send")
                unfit.retryable = False
                raise unfit from None
        return self._fixed

    def encode(self, body: Mapping[str, Any], stream: bool) -> bytes:
        """The request body for this upstream: its model name, and stream usage asked for."""
        rewritten = {**body, "model": self.spec.model}
        if stream and ("messages" in body or "prompt" in body):  # the Responses API reports usage unasked
            options = body.get("stream_options")
            rewritten["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
        return orjson.dumps(rewritten)

    async def send(self, path: str, body: bytes, client_headers: Mapping[str, str], stream: bool) -> Exchange:
        """Send a request and wait for the response headers; UpstreamError when that fails or is not a 2xx."""
        extra = {k: client_headers[k] for k in self._forward if k in client_headers and k not in self._headers}
        timeouts = self._timeouts
        wait = min(timeouts.per_try_s, timeouts.stream_idle_s) if stream else timeouts.per_try_s
        deadline = asyncio.get_running_loop().time() + wait  # a stream's head, or the whole of a plain answer
        response = await self._pool.post(self.name, self._origin, path, self.fixed_headers, extra, body,
                                         min(timeouts.connect_s, timeouts.per_try_s), deadline)
        try:
            await response.head()
        except BaseException:
            response.release()
            raise
        if stream:
            response.stream(timeouts.stream_idle_s)  # each read of a stream waits this long, and no deadline is left
        exchange = self.exchange_type(self.name, response, self.spec.limits, self.redact)
        if 300 <= exchange.status < 400:
            response.release()  # its Location names a place no policy does: never asked, never read (closed)
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
