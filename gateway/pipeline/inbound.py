"""What an inbound adapter is: one wire format clients speak, put into the pipeline's terms and back again.

The pipeline (gateway.pipeline) works on one shape of request: an OpenAI-compatible body (chat, completions,
embeddings or responses) that classification reads, the policy decides on, and OpenAI-compatible upstreams take.
An inbound adapter stands between that shape and its clients, and the pipeline calls it at each stage:

    intake     endpoints       the paths it serves, and for each the pipeline's endpoint and its upstream path
               credential      the API key in its headers (OpenAI: `Authorization: Bearer`)
               parse           its body -> a Call: the client's body, and the pipeline's body made from it
    decide     pin             narrow a decision (OpenAI's Responses API pins a follow-up to its holder)
    (any)      bind            the runtime its requests run against (clients of its own for the same upstreams)
    deliver    outbound        the path and body to send, given the candidates (pass through, or translate)
               stream          relay a stream (the pipeline's, for OpenAI-shaped events; a format may relay its own)
               answer, usage   an upstream's whole answer -> the client's, and what it used
               events          per stream: its outgoing events -> the client's, its ending, its failure event
               upstream_error  an upstream's error answer that is the client's to see -> the client's
    refuse     error           a GatewayError -> status, JSON body and headers in its error shape
               rate_headers    the headers every answer to a rate-limited tenant carries

How a new format plugs in (the Anthropic Messages API, say):
1. gateway/inbound/NAME.py: a subclass of Inbound. Its `endpoints` name its paths and what each is to the
   pipeline (`/v1/messages` -> Endpoint("/v1/messages", "chat", "/chat/completions", streamable=True));
   `credential` reads its key header; `parse` translates its body to the pipeline's (Messages -> chat);
   `outbound` may send the client's own body to a path of its own instead, when every candidate speaks the
   format (their `spec.kind` says); `answer` and `events` translate what comes back (a chat completion, chat
   chunks -> Messages, message events), and `usage` reads a passed-through answer's tokens; `error`,
   `upstream_error`, `rate_headers` and Events.failed render errors, refusals and the mid-stream failure
   event in its shape.
2. One registration: the adapter's instance among those gateway.serving.components passes to `by_path`; the
   app then sends a POST to each of its paths through the one Pipeline with it, and answers a wrong method
   or a gateway not ready yet through its `error`.
Nothing in gateway.pipeline changes. The defaults below pass everything through, as an OpenAI-shaped format
wants. Every candidate is sent the same path and body (the dispatcher's Request is one for all); a format that
needs each upstream spoken to in its own way gives the pipeline clients of its own through `bind` (the Messages
inbound: one that passes the body through, or one that translates it, per upstream). A stream is relayed (and
continued, and its usage read) by gateway.delivery as OpenAI chunks: `events` translates them on the way out;
a format whose own upstream events pass through relays them itself in `stream` (gateway/inbound/messages).

An adapter lives as long as the app (one per process): what it must remember between requests it keeps itself.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway.accounting.usage import Usage
from gateway.asgi import JSON, Headers, Send
from gateway.errors import GatewayError, UpstreamStatus
from gateway.routing.policy.decide import Decision
from gateway.state.base import Admission, Limits
from gateway.upstreams.base import Client
from gateway.values import value

if TYPE_CHECKING:
    from gateway.pipeline.deliver import Deliverer, Delivery
    from gateway.pipeline.runtime import Runtime


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One path an inbound serves, and what the pipeline makes of it."""

    path: str  # the client's: /v1/chat/completions
    name: str  # the pipeline's, as classification and the policy know it: chat, completions, embeddings, responses
    upstream_path: str  # where an OpenAI-compatible upstream takes it: /chat/completions
    streamable: bool


@value
class Call:
    """One request as its inbound format read it: the client's own body, and the pipeline's body made from it."""

    endpoint: Endpoint
    client_body: Mapping[str, Any]
    body: dict[str, Any]  # OpenAI-shaped: what is classified, decided on and (unless outbound says) sent


@dataclass(frozen=True, slots=True)
class Reply:
    """A whole answer in an inbound's shape."""

    status: int
    body: bytes
    content_type: bytes = JSON
    headers: Headers = field(default_factory=list)  # any the answer carries besides (Retry-After)


class Events(ABC):
    """One stream's events on their way to the client; as they are, unless a format translates them."""

    def outgoing(self, send: Send) -> Send:
        """The send the stream's events go out through (the one given, when they need no change)."""
        return send

    def ending(self, data: bytes) -> bytes:
        """The bytes that end a finished stream ([DONE], a summed usage event)."""
        return data

    @abstractmethod
    def failed(self, message: str) -> bytes:
        """The one event that ends a stream which cannot be finished, saying message."""


class Inbound(ABC):
    """One wire format clients speak (see the module's docstring for how the pipeline calls it)."""

    endpoints: Mapping[str, Endpoint]  # by the client's path
    credential_hint = "Authorization: Bearer <key>"  # how a client missing its key is told to send it

    def bind(self, runtime: Runtime) -> Runtime:
        """The runtime this format's requests run against: the one given, unless it needs clients of its own."""
        return runtime

    async def stream(self, deliverer: Deliverer, delivery: Delivery, started: float) -> None:
        """Deliver a stream: the pipeline's relay of OpenAI-shaped events, unless this format relays its own."""
        await deliverer.stream(delivery, started)

    @abstractmethod
    def credential(self, headers: Mapping[str, str]) -> str:
        """The API key the request carries, or '' when it carries none."""

    @abstractmethod
    def parse(self, endpoint: Endpoint, raw: bytes, headers: Mapping[str, str]) -> Call:
        """The request, read from its body; InvalidRequest when it is not one this format accepts."""

    async def pin(self, call: Call, decision: Decision) -> Decision:
        """decision, narrowed by what this format remembers of earlier requests."""
        return decision

    def outbound(self, call: Call, candidates: Sequence[Client]) -> tuple[str, Mapping[str, Any]]:
        """The upstream path and body for the candidates (every one is sent the same)."""
        return call.endpoint.upstream_path, call.body

    async def answer(self, call: Call, upstream: Client, data: bytes) -> bytes:
        """The client's answer, from the whole answer upstream gave."""
        return data

    def usage(self, call: Call, data: bytes) -> Usage:
        """What an upstream's whole answer (as upstream gave it) says it used."""
        return Usage.of_body(data)

    @abstractmethod
    async def events(self, call: Call, upstream: Client, first: bytes) -> Events:
        """How the events of a stream from upstream, starting with first, reach the client."""

    def upstream_error(self, call: Call, error: UpstreamStatus, body: bytes) -> Reply:
        """The client's answer to an upstream's error answer (body scrubbed of credentials) it should see."""
        content_type = error.content_type if error.content_type.startswith(JSON) else JSON
        return Reply(error.status, body, content_type)

    @abstractmethod
    def error(self, error: GatewayError) -> Reply:
        """The answer that tells the client of error, in this format's error shape."""

    @abstractmethod
    def rate_headers(self, limits: Limits, admission: Admission) -> Headers:
        """The headers an answer to a tenant with rate limits carries, as this request left them."""
