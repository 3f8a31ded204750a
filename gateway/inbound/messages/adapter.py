"""Anthropic's Messages API as clients speak it: POST /v1/messages (JSON or events) and its count_tokens.

A key comes in `x-api-key` (the anthropic SDKs) or `Authorization: Bearer` (agents given an auth token). The
request is classified and decided as it came, every field read. Each candidate gets it in its own way: an
upstream that speaks Messages (`kind: anthropic`, or the capability `messages`) as it is, any other translated to
chat completions and its answer back (gateway/inbound/messages/translated.py). Errors are Anthropic's.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping
from typing import Any

import orjson

from gateway.accounting.usage import Usage
from gateway.asgi import (
    JSON,
    ClientGone,
    Headers,
    Receive,
    Scope,
    Send,
    header_map,
    parse_object,
    read_body,
    send_bytes,
)
from gateway.errors import GatewayError, InvalidRequest, UpstreamStatus
from gateway.inbound.messages import count, errors
from gateway.inbound.messages import deliver as messages_deliver
from gateway.inbound.messages.stream import of_messages
from gateway.inbound.messages.translated import TranslatedUpstream
from gateway.inbound.openai import bearer
from gateway.operations import logs
from gateway.operations.metrics import Metrics
from gateway.pipeline.auth import authenticate, check_route
from gateway.pipeline.deliver import Deliverer, Delivery
from gateway.pipeline.inbound import Call, Endpoint, Events, Inbound, Reply
from gateway.pipeline.pipeline import CLIENT_CLOSED, Pipeline
from gateway.pipeline.record import Record
from gateway.pipeline.runtime import Runtime
from gateway.state.base import Admission, Limits
from gateway.upstreams.base import Client
from gateway.upstreams.messages import MessagesUpstream, speaks_messages

ENDPOINT = Endpoint("/v1/messages", "messages", "/messages", streamable=True)
ENDPOINTS = {ENDPOINT.path: ENDPOINT}
COUNT_TOKENS = "/v1/messages/count_tokens"


class MessagesEvents(Events):
    """A Messages stream's events go out as they are; one that cannot be finished ends with an error event."""

    def failed(self, message: str) -> bytes:
        return errors.error_event("api_error", message)


class MessagesInbound(Inbound):
    """Anthropic's wire format, served over the same pipeline as OpenAI's."""

    endpoints = ENDPOINTS
    credential_hint = "x-api-key: <key>"

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._bound: tuple[Runtime, Runtime] | None = None  # the runtime last given, and the one made for it

    def bind(self, runtime: Runtime) -> Runtime:
        """runtime with a Messages client for every upstream: made once per policy load."""
        if self._bound is not None and self._bound[0] is runtime:
            return self._bound[1]
        bound = Runtime(runtime.policy, self._clients(runtime), runtime.pool)
        self._bound = (runtime, bound)
        return bound

    def _clients(self, runtime: Runtime) -> dict[str, Client]:
        clients: dict[str, Client] = {}
        for name, client in runtime.upstreams.items():
            if speaks_messages(client.spec) and runtime.pool is not None:
                clients[name] = MessagesUpstream(name, client.spec, runtime.pool)
            else:
                clients[name] = TranslatedUpstream(client, self._dropped)
        return clients

    def _dropped(self, upstream: str, fields: set[str]) -> None:
        for name in fields:
            self.metrics.count(self.metrics.translation_dropped, upstream, name)

    def credential(self, headers: Mapping[str, str]) -> str:
        """The key of `x-api-key`, else of `Authorization: Bearer`."""
        return headers.get("x-api-key", "").strip() or bearer(headers)

    def parse(self, endpoint: Endpoint, raw: bytes, headers: Mapping[str, str]) -> Call:
        """The body as it came: classified whole, and sent as it is to upstreams that speak Messages."""
        body = parse_object(raw)
        check(body)
        return Call(endpoint, body, body)

    def usage(self, call: Call, data: bytes) -> Usage:
        """A Messages answer's usage: its input, cache reads and cache writes all count as prompt tokens."""
        try:
            answer = orjson.loads(data)
        except orjson.JSONDecodeError:
            return Usage()
        return of_messages(answer.get("usage") if isinstance(answer, dict) else None)

    async def events(self, call: Call, upstream: Client, first: bytes) -> Events:
        """The Messages stream relay renders its own failure event."""
        return MessagesEvents()

    async def stream(self, deliverer: Deliverer, delivery: Delivery, started: float) -> None:
        """Relay a Messages stream (the pipeline's relay reads chat completions events)."""
        await messages_deliver.stream(deliverer, delivery, started)

    def upstream_error(self, call: Call, error: UpstreamStatus, body: bytes) -> Reply:
        """An upstream's error: Anthropic's own as it is, another's reworded in Anthropic's shape."""
        status, shaped, headers = errors.from_upstream(_with_body(error, body))
        return Reply(status, shaped, JSON, headers)

    def error(self, error: GatewayError) -> Reply:
        """Anthropic's error JSON, its type and status, with the error's own headers."""
        status, body, headers = errors.from_gateway(error)
        return Reply(status, body, JSON, headers)

    def rate_headers(self, limits: Limits, admission: Admission) -> Headers:
        """Anthropic's anthropic-ratelimit-* headers, their reset an RFC 3339 time."""
        return rate_headers(limits, admission, dt.datetime.now(dt.UTC))

    async def count_tokens(self, scope: Scope, receive: Receive, send: Send, runtime: Runtime,
                           pipeline: Pipeline) -> None:
        """POST /v1/messages/count_tokens, for a route this key may use (gateway/inbound/messages/count.py); counted
        and audited as endpoint `count_tokens`."""
        started = time.perf_counter()
        headers = header_map(scope)
        request_id = headers["x-request-id"] = pipeline.ids.for_request(headers.get("x-request-id", ""))
        logs.request_id.set(request_id)
        record = Record(request_id, runtime.policy.hash, "count_tokens")
        try:
            try:
                reply = await self._count(receive, runtime, pipeline, headers, record)
            except GatewayError as exc:
                pipeline.note_failure(exc, record)
                reply = self.error(exc)
            record.status = reply.status
            await send_bytes(send, reply.status, reply.body, reply.content_type, [*reply.headers, *record.tell()])
        except ClientGone:
            record.status, record.outcome = CLIENT_CLOSED, "client_closed"
        finally:
            pipeline.settler.finish(record, time.perf_counter() - started)

    async def _count(self, receive: Receive, runtime: Runtime, pipeline: Pipeline, headers: dict[str, str],
                     record: Record) -> Reply:
        """Authenticate, read and check a count_tokens request, and count it."""
        record.tenant = authenticate(runtime.policy, self.credential(headers), self.credential_hint)
        body = parse_object(await read_body(receive, headers, pipeline.max_body_bytes))
        record.route = check_route(runtime.policy, record.tenant, body)
        return await count.counted(self.bind(runtime), pipeline.admitter, self, record, body, headers, self.metrics)


def check(body: dict[str, Any]) -> None:
    """The fields Anthropic requires of every request: max_tokens, and messages (classify checks their shape), and
    the shape of system and tools, which no upstream that speaks Messages should get wrong."""
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise InvalidRequest("max_tokens: a positive integer is required", param="max_tokens")
    system = body.get("system")
    if system is not None and not isinstance(system, str | list):
        raise InvalidRequest("system: must be a string or an array of text blocks", param="system")
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise InvalidRequest("tools: must be an array of tools", param="tools")
    for i, tool in enumerate(tools or ()):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            raise InvalidRequest(f"tools.{i}: must be an object with a string 'name'", param=f"tools.{i}")


def _with_body(error: UpstreamStatus, body: bytes) -> UpstreamStatus:
    scrubbed = UpstreamStatus(error.upstream, error.status, body, error.content_type)
    scrubbed.retry_after = error.retry_after
    return scrubbed


def rate_headers(limits: Limits, admission: Admission, now: dt.datetime) -> Headers:
    """anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset} for the tenant's rate limits."""
    headers: Headers = []
    for kind, limit in (("requests", limits.requests_per_minute), ("tokens", limits.tokens_per_minute)):
        rate = admission.rates.get(kind)
        if limit is None or rate is None:
            continue
        reset = (now + dt.timedelta(seconds=max(0.0, rate.reset_s))).isoformat(timespec="seconds")
        prefix = b"anthropic-ratelimit-" + kind.encode()
        headers += [(prefix + b"-limit", str(limit).encode()), (prefix + b"-remaining", str(rate.remaining).encode()),
                    (prefix + b"-reset", reset.replace("+00:00", "Z").encode())]
    return headers
