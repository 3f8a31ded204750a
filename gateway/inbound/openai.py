"""OpenAI's API as clients speak it: chat, completions, embeddings and responses, passed through as they are.

Errors are `{"error": {"message", "type", "code", "param"}}`. A tenant's limits refuse in OpenAI's 429 vocabulary:
a rate limit is `rate_limit_exceeded` typed `requests` or `tokens`; a budget is `insufficient_quota`. Every answer
to a rate-limited tenant carries its `x-ratelimit-limit-*`, `-remaining-*` and `-reset-*` headers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import orjson

from gateway.asgi import JSON, Headers, Message, Send, parse_object
from gateway.errors import GatewayError, NoCandidate, RateLimited
from gateway.inbound.responses import Holders, Shared, response_id, streamed_response_id
from gateway.pipeline.inbound import Call, Endpoint, Events, Inbound, Reply
from gateway.routing.policy.decide import Decision
from gateway.sse import error_event, response_failed
from gateway.state.base import Admission, Limits
from gateway.upstreams.base import Client

ENDPOINTS = {e.path: e for e in (
    Endpoint("/v1/chat/completions", "chat", "/chat/completions", streamable=True),
    Endpoint("/v1/completions", "completions", "/completions", streamable=True),
    Endpoint("/v1/embeddings", "embeddings", "/embeddings", streamable=False),
    Endpoint("/v1/responses", "responses", "/responses", streamable=True),
)}
CODES = {"budget_exhausted": "insufficient_quota", "rate_limited": "rate_limit_exceeded"}  # OpenAI's words for ours


class OpenAIInbound(Inbound):
    """OpenAI's wire format; remembers which upstream holds each Responses API answer, for its follow-ups."""

    endpoints = ENDPOINTS

    def __init__(self, shared: Shared | None = None) -> None:
        self.holders = Holders(shared)
        self.resets = Resets()

    def credential(self, headers: Mapping[str, str]) -> str:
        """The key of `Authorization: Bearer <key>`."""
        return bearer(headers)

    def parse(self, endpoint: Endpoint, raw: bytes, headers: Mapping[str, str]) -> Call:
        """The body as it came: it is already the pipeline's shape."""
        body = parse_object(raw)
        return Call(endpoint, body, body)

    async def pin(self, call: Call, decision: Decision) -> Decision:
        """A Responses API follow-up goes to the upstream holding its previous response."""
        return await self.holders.pin(decision, call.body) if "previous_response_id" in call.body else decision

    async def answer(self, call: Call, upstream: Client, data: bytes) -> bytes:
        """The answer as it came; a Responses API answer's id is remembered as upstream's."""
        if call.endpoint.name == "responses":
            await self.holders.remember(response_id(data), upstream.name)
        return data

    async def events(self, call: Call, upstream: Client, first: bytes) -> Events:
        """Events as they came; a Responses API stream's id is remembered as upstream's."""
        if call.endpoint.name == "responses":
            await self.holders.remember(streamed_response_id(first), upstream.name)
            return ResponsesEvents(first)
        return CHAT_EVENTS

    def error(self, error: GatewayError) -> Reply:
        """OpenAI's error JSON, with the error's own headers."""
        return Reply(error.status, error_body(error), JSON, list(error.headers))

    def rate_headers(self, limits: Limits, admission: Admission) -> Headers:
        """OpenAI's x-ratelimit-* headers."""
        return rate_headers(limits, admission, self.resets)


class ChatEvents(Events):
    """Chat and completions streams: the failure event is one OpenAI error object."""

    def failed(self, message: str) -> bytes:
        """An in-band error event coded stream_interrupted."""
        return error_event(message, "stream_interrupted")


CHAT_EVENTS = ChatEvents()  # it holds nothing: one serves every stream


class ResponsesEvents(Events):
    """A Responses API stream: its failure is `response.failed`, numbered after the last event that went out."""

    def __init__(self, first: bytes) -> None:
        self.first = first
        self.last = b""

    def outgoing(self, send: Send) -> Send:
        """send, noting the last events sent."""
        async def noting(message: Message) -> None:
            body = message.get("body")
            if body:
                self.last = body
            await send(message)
        return noting

    def failed(self, message: str) -> bytes:
        """`response.failed` carrying the response the stream began."""
        return response_failed(self.first, self.last, message)


def bearer(headers: Mapping[str, str]) -> str:
    """The key of an `Authorization: Bearer <key>` header, or ''."""
    scheme, _, key = headers.get("authorization", "").partition(" ")
    return key.strip() if scheme.lower() == "bearer" else ""


def error_body(error: GatewayError) -> bytes:
    """error as OpenAI's error JSON: a rate limit typed by what ran out, a spent budget as insufficient_quota."""
    code = CODES.get(error.code or "", error.code)
    if isinstance(error, RateLimited):
        kind = error.kind
    elif isinstance(error, NoCandidate) and error.code == "budget_exhausted":
        kind = "insufficient_quota"
    else:
        kind = error.type
    return orjson.dumps({"error": {"message": error.message, "type": kind, "code": code, "param": error.param}})


RESETS = 4096  # reset header values kept by Resets
RATE_HEADER_NAMES = {kind: tuple(f"x-ratelimit-{what}-{kind}".encode() for what in ("limit", "remaining", "reset"))
                     for kind in ("requests", "tokens")}


def rate_headers(limits: Limits, admission: Admission, resets: Resets | None = None) -> Headers:
    """OpenAI's x-ratelimit-* headers for the tenant's rate limits, as this request left them."""
    headers: Headers = []
    if resets is None:
        resets = Resets()
    for kind, limit in (("requests", limits.requests_per_minute), ("tokens", limits.tokens_per_minute)):
        rate = admission.rates.get(kind)
        if limit is None or rate is None:
            continue
        named_limit, named_remaining, named_reset = RATE_HEADER_NAMES[kind]
        headers += [(named_limit, b"%d" % limit), (named_remaining, b"%d" % rate.remaining),
                    (named_reset, resets[rate.reset_s])]
    return headers


class Resets(dict[float, bytes]):
    """Reset header values by reset time, written once each: an admitted request's are among a few thousand (a
    minute less the part of a second gone)."""

    def __missing__(self, seconds: float) -> bytes:
        if len(self) >= RESETS:
            self.clear()
        written = self[seconds] = duration(seconds).encode()
        return written


def duration(seconds: float) -> str:
    """A reset time as OpenAI writes it: '20ms', '1s', '6m0s'."""
    ms = max(0, math.ceil(seconds * 1000))
    if ms < 1000:
        return f"{ms}ms"
    minutes, rest = divmod(ms, 60_000)
    whole, part = divmod(rest, 1000)  # integers throughout: formatting a float goes through printf
    text = f"{whole}.{part:03d}".rstrip("0") + "s" if part else f"{whole}s"
    return f"{minutes}m{text}" if minutes else text
