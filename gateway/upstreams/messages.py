"""Upstreams that speak Anthropic's Messages API themselves: Anthropic, and servers that serve /v1/messages.

The client's Messages request goes through untouched but for `model`, over the same connection pool, limits,
redirect refusal and key redaction as gateway/upstreams/openai.py, whose exchange it reuses. Anthropic gets its
key in `x-api-key` and the client's `anthropic-version` and `anthropic-beta` headers; a self-hosted server (the
capability `messages`) gets its key as a bearer token and neither header. An Anthropic upstream also counts a
request's tokens (`count_tokens`) at its /messages/count_tokens, sent and read the same way.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import SecretStr

from gateway.errors import UpstreamMalformed
from gateway.upstreams.openai import Exchange, OpenAIUpstream
from gateway.upstreams.spec import UpstreamSpec

if TYPE_CHECKING:
    from gateway.upstreams.http import Pool

ANTHROPIC_URL = "https://api.anthropic.com/v1"
ANTHROPIC_VERSION = "2023-06-01"  # what the SDKs send; a client's own wins
VERSION_HEADERS = frozenset({"anthropic-version", "anthropic-beta"})
PATH = "/messages"
COUNT_PATH = "/messages/count_tokens"


def speaks_messages(spec: UpstreamSpec) -> bool:
    """Whether an upstream takes Messages requests as they are: Anthropic, or one declaring the capability."""
    return spec.kind == "anthropic" or "messages" in spec.capabilities


def with_defaults(spec: UpstreamSpec) -> UpstreamSpec:
    """An Anthropic upstream's spec with Anthropic's URL and the key litellm would read, where the policy has none."""
    update: dict[str, Any] = {}
    if spec.base_url is None:
        update["base_url"] = ANTHROPIC_URL
    if spec.api_key is None and os.environ.get("ANTHROPIC_API_KEY", "").strip():
        update["api_key"] = SecretStr(os.environ["ANTHROPIC_API_KEY"].strip())  # a file's newline is no part of it
    return dataclasses.replace(spec, **update) if update else spec


def is_message(body: bytes) -> bool:
    """Whether a whole answer is a Messages API message: a JSON object of type `message` with its content."""
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    return isinstance(answer, dict) and answer.get("type") == "message" and isinstance(answer.get("content"), list)


def is_count(body: bytes) -> bool:
    """Whether an answer is a token count: a JSON object whose `input_tokens` is a whole number, not negative."""
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    tokens = answer.get("input_tokens") if isinstance(answer, dict) else None
    return isinstance(tokens, int) and not isinstance(tokens, bool) and tokens >= 0


class MessagesExchange(Exchange):
    """A Messages upstream's answer in progress; a whole answer that is not a message is the upstream's failure."""

    __slots__ = ()

    async def read(self) -> bytes:
        """The whole answer; UpstreamMalformed when it is not a message (HTML, another API's JSON, a stream)."""
        body = await super().read()
        if not is_message(body):
            raise UpstreamMalformed(self.upstream, "the answer is not a Messages API message")
        return body

    async def read_count(self) -> bytes:
        """The whole answer to count_tokens; UpstreamMalformed when it is not a count."""
        body = await super().read()
        if not is_count(body):
            raise UpstreamMalformed(self.upstream, "the answer is not a token count")
        return body


class MessagesUpstream(OpenAIUpstream):
    """Sends Messages requests to one upstream that speaks the Messages API; never follows a redirect."""

    exchange_type = MessagesExchange

    def __init__(self, name: str, spec: UpstreamSpec, pool: Pool) -> None:
        anthropic = spec.kind == "anthropic"
        if anthropic:
            spec = with_defaults(spec)
        super().__init__(name, spec, pool)
        self._anthropic = anthropic
        if anthropic:
            self._headers.pop("authorization", None)
            if spec.api_key is not None:
                self._headers["x-api-key"] = spec.api_key.get_secret_value()
            self._forward = self._forward | VERSION_HEADERS

    def encode(self, body: Mapping[str, Any], stream: bool) -> bytes:
        """The request as the client sent it, with this upstream's model."""
        return orjson.dumps({**body, "model": self.spec.model})

    async def send(self, path: str, body: bytes, client_headers: Mapping[str, str], stream: bool) -> Exchange:
        """POST the request to the upstream's /messages; UpstreamError when that fails or is not a 2xx."""
        return await super().send(PATH, body, self._versioned(client_headers), stream)

    async def count_tokens(self, body: Mapping[str, Any], client_headers: Mapping[str, str]) -> bytes:
        """The upstream's count of a request (bounded, key cut out), sent as send does; UpstreamError if not a count."""
        sent = await super().send(COUNT_PATH, self.encode(body, False), self._versioned(client_headers), False)
        assert isinstance(sent, MessagesExchange)  # exchange_type
        try:
            return await sent.read_count()
        finally:
            sent.close()

    def _versioned(self, client_headers: Mapping[str, str]) -> Mapping[str, str]:
        """The client's headers, with Anthropic's version for an Anthropic upstream when the client named none."""
        if self._anthropic and "anthropic-version" not in client_headers:
            return {**client_headers, "anthropic-version": ANTHROPIC_VERSION}
        return client_headers
