"""The ASGI application: each inbound format's hot endpoints as plain ASGI ahead of Starlette, which serves the rest.

Settings come from serving.settings, the parts from serving.components, the lifespan from serving.lifespan and
Starlette's routes from serving.routes; this module routes between them.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette

from gateway.asgi import Headers, Message, Receive, Scope, Send, send_bytes
from gateway.errors import GatewayError, MethodNotAllowed
from gateway.inbound.messages.adapter import COUNT_TOKENS
from gateway.operations import logs
from gateway.operations.audit import AuditLog
from gateway.operations.metrics import Metrics
from gateway.operations.reload import Reloader
from gateway.pipeline.inbound import Inbound
from gateway.pipeline.intake import request_id_for
from gateway.pipeline.runtime import Runtime
from gateway.routing.capacity.state import Capacity
from gateway.routing.policy.model import Policy
from gateway.serving.components import Components
from gateway.serving.keys import PUBLIC_KEYS, provider_keys, warn_of_public_keys
from gateway.serving.lifespan import lifespan
from gateway.serving.routes import site
from gateway.serving.settings import DEFAULT_MAX_BODY, Settings
from gateway.state.circuits import Circuits
from gateway.state.ledger import Ledger

__all__ = ["DEFAULT_MAX_BODY", "PUBLIC_KEYS", "Gateway", "Settings", "create_app", "provider_keys",
           "warn_of_public_keys"]


class Gateway:
    """The whole gateway as one ASGI app; its lifespan opens and closes every client it uses."""

    def __init__(self, settings: Settings, policy: Policy | None = None, metrics: Metrics | None = None) -> None:
        self.parts = Components(settings, policy, metrics)
        self.site = site(self.parts, self._lifespan)

    @asynccontextmanager
    async def _lifespan(self, _: Starlette) -> AsyncIterator[None]:
        async with lifespan(self.parts):
            yield

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.site(scope, receive, send)
            return
        inbound = self.parts.inbounds.get(scope["path"])
        runtime = self.parts.runtime
        if inbound is not None and scope["method"] == "POST" and runtime is not None:
            await self.parts.pipeline(scope, receive, send, runtime, inbound)
            return
        if scope["path"] == COUNT_TOKENS and scope["method"] == "POST" and runtime is not None:
            await self.parts.messages.count_tokens(scope, receive, send, runtime, self.parts.pipeline)
            return
        if scope["path"] == COUNT_TOKENS:
            inbound = self.parts.messages  # its errors, a 405 or a 503, in Anthropic's shape
        offered = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"), "")
        identity = self.identity_headers(offered)
        logs.request_id.set(identity[0][1].decode())
        if inbound is None:
            await self.site(scope, receive, _tagging(send, identity))
        elif scope["method"] != "POST":
            await _send_error(send, inbound, MethodNotAllowed(f"{scope['path']} takes POST"),
                              [(b"allow", b"POST"), *identity])
        else:
            await _send_error(send, inbound, GatewayError("the gateway is not ready", status=503, code="not_ready"),
                              identity)

    def identity_headers(self, offered: str = "") -> Headers:
        """The request id (the client's own when it is safe, else a random one) and the policy hash every answer
        carries."""
        return [(b"x-request-id", request_id_for(offered).encode("latin-1")),
                (b"x-switchyard-policy", self.policy.hash.encode())]

    @property
    def settings(self) -> Settings:
        """What the gateway was configured with."""
        return self.parts.settings

    @property
    def policy(self) -> Policy:
        """The policy served now."""
        return self.parts.policy

    @property
    def runtime(self) -> Runtime | None:
        """The policy with its upstream clients, while the lifespan runs."""
        return self.parts.runtime

    @property
    def reloader(self) -> Reloader | None:
        """The policy's reloader, while the lifespan runs."""
        return self.parts.reloader

    @property
    def metrics(self) -> Metrics:
        """Every metric."""
        return self.parts.metrics

    @property
    def ledger(self) -> Ledger:
        """Limits and spend."""
        return self.parts.ledger

    @property
    def circuits(self) -> Circuits:
        """The upstreams' circuit breakers."""
        return self.parts.circuits

    @property
    def capacity(self) -> Capacity:
        """Which upstreams are full."""
        return self.parts.capacity

    @property
    def audit(self) -> AuditLog:
        """The audit trail."""
        return self.parts.audit


def _tagging(send: Send, identity: Headers) -> Send:
    """send, with identity's headers added to the start of the response."""
    async def tagged(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", ()), *identity]
        await send(message)
    return tagged


async def _send_error(send: Send, inbound: Inbound, error: GatewayError, extra: Headers) -> None:
    """Send error in inbound's shape."""
    reply = inbound.error(error)
    await send_bytes(send, reply.status, reply.body, reply.content_type, [*reply.headers, *extra])


def create_app() -> Gateway:
    """The app for one worker process, configured from the environment (`switchyard serve --workers N`)."""
    level = os.environ.get("SWITCHYARD_LOG_LEVEL", "info")
    access_log = bool(os.environ.get("SWITCHYARD_ACCESS_LOG"))
    logs.configure(level, (), access_log)  # loading the policy may import litellm, which logs as it loads
    gateway = Gateway(Settings.from_env())
    logs.configure(level, provider_keys(gateway.policy), access_log)
    return gateway
