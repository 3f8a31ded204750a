"""OpenAI-compatible upstreams over one shared aiohttp session; the only importer of aiohttp.

vLLM, SGLang, llama.cpp, Ollama, TGI, OpenAI, DeepSeek and others speak this wire format, so
request and response bytes pass through, with only `model` (and the ask for stream usage) rewritten.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import aiohttp
import orjson

from gateway.errors import (
    UpstreamCut,
    UpstreamError,
    UpstreamSilent,
    UpstreamStatus,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.policy.schema import Resilience, Upstream

FORWARDED_HEADERS = frozenset({"traceparent", "tracestate", "x-request-id"})


def new_session() -> aiohttp.ClientSession:
    """The process's one upstream session: no pool limit of its own (max_concurrency is the limit)."""
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=60, enable_cleanup_closed=True)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None))


SILENCE_S = 1.0
CONTEXT_LENGTH = re.compile(
    rb"context_length_exceeded|maximum context length|longer than the model'?s context length"
    rb"|exceeds? the (?:available )?context (?:size|length|window)|context size has been exceeded"
    rb"|input length exceeds|too many tokens|prompt is too long"
    rb"|(?:longer than|exceeds?) the maximum (?:model|allowed|context) length", re.IGNORECASE)
CONTENT_FILTER = re.compile(rb"content_filter|content_policy_violation|ResponsibleAIPolicyViolation|safety system",
                            re.IGNORECASE)


@contextmanager
def upstream_errors(upstream: str, started: float | None = None, body: bool = False) -> Iterator[None]:
    """Map aiohttp's and the socket's exceptions to ours: the one boundary where they are met (body: while the
    answer is being read, when a broken connection is a cut)."""
    broken = UpstreamCut if body else UpstreamUnavailable
    try:
        yield
    except UpstreamError:
        raise
    except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
        raise UpstreamTimeout(upstream) from exc
    except aiohttp.ServerDisconnectedError as exc:
        if started is not None and time.monotonic() - started >= SILENCE_S:
            raise UpstreamSilent(upstream) from exc
        raise broken(upstream, "disconnected") from exc
    except aiohttp.ClientPayloadError as exc:
        raise UpstreamCut(upstream, "response cut") from exc
    except (aiohttp.ClientError, OSError) as exc:
        raise broken(upstream, type(exc).__name__) from exc


def error_kind(status: int, body: bytes) -> str | None:
    """What an upstream's 400-class answer means, as OpenAI, vLLM, SGLang, llama.cpp and Ollama word it."""
    if status not in (400, 413, 422):
        return None
    if CONTEXT_LENGTH.search(body):
        return "context_length"
    if CONTENT_FILTER.search(body):
        return "content_filter"
    return None


class Exchange:
    """One upstream response in progress: status and content type known, body still to come."""

    __slots__ = ("_response", "content_type", "status", "upstream")

    def __init__(self, upstream: str, response: aiohttp.ClientResponse) -> None:
        self.upstream = upstream
        self._response = response
        self.status = response.status
        self.content_type = response.headers.get("content-type", "application/json").encode("latin-1")


    async def read(self) -> bytes:
        """The whole body."""
        with upstream_errors(self.upstream, body=True):
            return await self._response.read()

    async def chunks(self) -> AsyncIterator[bytes]:
        """Body bytes as they arrive."""
        with upstream_errors(self.upstream, body=True):
            async for chunk in self._response.content.iter_any():
                yield chunk

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
    """Sends requests to one OpenAI-compatible upstream."""

    def __init__(self, name: str, spec: Upstream, session: aiohttp.ClientSession, resilience: Resilience) -> None:
        self.name = name
        self.spec = spec
        self._session = session
        self._base = (spec.base_url or "").rstrip("/")
        self._headers = {"content-type": "application/json"}
        if spec.api_key is not None:
            self._headers["authorization"] = f"Bearer {spec.api_key.get_secret_value()}"
        self._forward = FORWARDED_HEADERS | spec.forward_headers
        self._header_timeout = resilience.per_try_timeout_s
        self._plain_timeout = aiohttp.ClientTimeout(total=resilience.per_try_timeout_s,
                                                    sock_connect=resilience.connect_timeout_s)
        self._stream_timeout = aiohttp.ClientTimeout(sock_read=resilience.stream_idle_timeout_s,
                                                     sock_connect=resilience.connect_timeout_s)

    def encode(self, body: Mapping[str, Any], stream: bool) -> bytes:
        """The request body for this upstream: its model name, and stream usage asked for."""
        rewritten = {**body, "model": self.spec.model}
        if stream and ("messages" in body or "prompt" in body):  # the Responses API reports usage unasked
            options = body.get("stream_options")
            rewritten["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
        return orjson.dumps(rewritten)

    async def send(self, path: str, body: bytes, client_headers: Mapping[str, str], stream: bool) -> Exchange:
        """Send a request and wait for the response headers; UpstreamError when that fails."""
        headers = self._headers
        extra = {k: v for k, v in client_headers.items() if k in self._forward}
        if extra:
            headers = {**extra, **headers}
        with upstream_errors(self.name, time.monotonic()):
            if stream:  # sock_read bounds each read of a stream, so its headers need a deadline of their own
                async with asyncio.timeout(self._header_timeout):
                    response = await self._session.post(self._base + path, data=body, headers=headers,
                                                        timeout=self._stream_timeout)
            else:
                response = await self._session.post(self._base + path, data=body, headers=headers,
                                                    timeout=self._plain_timeout)
        exchange = Exchange(self.name, response)
        if exchange.status >= 400:
            error = await self._failed(exchange)
            raise error
        return exchange

    async def _failed(self, exchange: Exchange) -> UpstreamStatus:
        try:
            body = await exchange.read()
        except UpstreamError:
            body = b""
        finally:
            exchange.close()
        error = UpstreamStatus(self.name, exchange.status, body, exchange.content_type)
        error.retry_after = exchange.retry_after()
        error.kind = error_kind(exchange.status, body)
        return error
