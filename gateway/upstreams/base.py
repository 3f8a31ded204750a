"""The two small interfaces every upstream adapter implements: a client that sends, and the exchange it returns."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

from gateway.upstreams.spec import UpstreamSpec


class Exchange(Protocol):
    """One upstream response in progress, in the OpenAI wire format: status known, body still to come.

    An adapter whose exchange cuts the upstream's key out itself (gateway/upstreams/redact.py) says so with a class
    attribute `redacted = True`; the dispatcher redacts every other one. Streams come in whole events.
    """

    upstream: str
    status: int
    content_type: bytes


    async def read(self) -> bytes:
        """The whole body (OpenAI JSON)."""

    def chunks(self) -> AsyncIterator[bytes]:
        """Body bytes as they arrive (OpenAI SSE for streams)."""

    def retry_after(self) -> str | None:
        """The Retry-After header, if the upstream sent one."""

    def close(self) -> None:
        """Release or close the connection."""


class Client(Protocol):
    """Sends requests to one upstream; raises gateway.errors.UpstreamError (never its library's exceptions).

    It never follows a redirect (a 3xx is UpstreamRedirect), and reads answers within the spec's `limits`.
    """

    name: str
    spec: UpstreamSpec

    def encode(self, body: Mapping[str, Any], stream: bool) -> bytes:
        """The request body for this upstream, from the client's OpenAI request; made once for all its tries."""

    async def send(self, path: str, body: bytes, client_headers: Mapping[str, str], stream: bool) -> Exchange:
        """Send a request and wait for the response to start; UpstreamStatus or UpstreamRedirect if not a 2xx."""

    async def aclose(self) -> None:
        """Close the connections this client holds of its own, once no exchange of it is open."""
