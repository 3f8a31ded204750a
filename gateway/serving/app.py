"""The ASGI application: the hot endpoints as plain ASGI ahead of Starlette, which serves the rest."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.asgi import Headers, Message, Receive, Scope, Send, send_bytes
from gateway.delivery.dispatch import Dispatcher, Inflight
from gateway.errors import GatewayError, MethodNotAllowed, NotFound
from gateway.inbound.base import Inbound
from gateway.inbound.messages.adapter import COUNT_TOKENS, MessagesInbound
from gateway.inbound.openai import OpenAIInbound, bearer, error_body
from gateway.operations import logs
from gateway.operations.audit import AuditLog, Seal, read_key, sinks_for
from gateway.operations.metrics import CONTENT_TYPE, Metrics
from gateway.operations.reload import Reloader
from gateway.pipeline.auth import authenticate, check_route
from gateway.pipeline.intake import request_id_for
from gateway.pipeline.pipeline import Pipeline
from gateway.pipeline.runtime import Runtime
from gateway.routing.policy.loader import load_policy
from gateway.routing.policy.model import Policy
from gateway.serving.admin import Admin
from gateway.state.base import Backend
from gateway.state.circuits import CLOSED, STATE_NAMES
from gateway.state.latency import LatencyTracker
from gateway.state.ledger import Ledger
from gateway.state.memory import MemoryBackend
from gateway.state.redis import RedisBackend
from gateway.state.retry_budget import RetryBudget
from gateway.upstreams.catalog import LitellmCatalog
from gateway.upstreams.openai import new_session

DEFAULT_MAX_BODY = 10 * 1024 * 1024
PUBLIC_KEYS = ("sk-sy-dev-only-replace-me-0123456789abcdef",)  # printed in the README and the shipped policy
logger = logging.getLogger("switchyard.app")
METRICS_FLUSH_S = 1.0
STATE_VALUES = {name: value for value, name in STATE_NAMES.items()}


@dataclass(frozen=True)
class Settings:
    """What `switchyard serve` configures."""

    policy: str = "policies"
    max_body_bytes: int = DEFAULT_MAX_BODY
    reload_interval_s: float = 2.0
    redis_url: str | None = None
    admin_key: str | None = None
    audit: tuple[str, ...] = ()
    audit_key_file: str | None = None
    metrics_port: int | None = None  # /metrics is served there, and then not on the main port

    @classmethod
    def from_env(cls) -> Settings:
        """Settings from SWITCHYARD_* variables, as each worker process reads them."""
        return cls(policy=os.environ.get("SWITCHYARD_POLICY", "policies"),
                   max_body_bytes=int(os.environ.get("SWITCHYARD_MAX_BODY_BYTES", DEFAULT_MAX_BODY)),
                   reload_interval_s=float(os.environ.get("SWITCHYARD_RELOAD_INTERVAL_S", 2.0)),
                   redis_url=os.environ.get("SWITCHYARD_REDIS_URL") or None,
                   admin_key=os.environ.get("SWITCHYARD_ADMIN_KEY") or None,
                   audit=tuple(t for t in os.environ.get("SWITCHYARD_AUDIT", "").split(",") if t),
                   audit_key_file=os.environ.get("SWITCHYARD_AUDIT_KEY_FILE") or None,
                   metrics_port=int(os.environ["SWITCHYARD_METRICS_PORT"]) if os.environ.get("SWITCHYARD_METRICS_PORT")
                   else None)


class Gateway:
    """The whole gateway as one ASGI app; its lifespan opens and closes every client it uses."""

    def __init__(self, settings: Settings, policy: Policy | None = None, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.policy = policy or load_policy(settings.policy, catalog=LitellmCatalog())
        self.policy_path = os.path.abspath(settings.policy)
        self.metrics = metrics or Metrics()
        self.latency = LatencyTracker()
        dispatcher = Dispatcher(self.metrics, Inflight(), RetryBudget())
        self.circuits = dispatcher.circuits
        backend: Backend = RedisBackend(settings.redis_url) if settings.redis_url else MemoryBackend()
        self.ledger = Ledger(backend, self.metrics)
        seal = Seal(read_key(settings.audit_key_file))
        self.audit = AuditLog(sinks_for(settings.audit, seal), self.metrics, seal)
        if settings.audit and seal.key is None:
            logger.warning("the audit trail is not keyed (no --audit-key-file or $SWITCHYARD_AUDIT_KEY): anyone who "
                           "can write its files can rewrite them undetected")
        self.pipeline = Pipeline(self.metrics, dispatcher, self.latency, self.ledger, self.audit,
                                 settings.max_body_bytes)
        self.capacity = self.pipeline.capacity
        self.openai = OpenAIInbound()
        self.messages = MessagesInbound(self.metrics)
        self.inbounds: dict[str, Inbound] = {**dict.fromkeys(self.openai.endpoints, self.openai),
                                             **dict.fromkeys(self.messages.endpoints, self.messages)}
        self.admin = Admin(self.ledger, settings.admin_key)
        self.runtime: Runtime | None = None
        self.reloader: Reloader | None = None
        self.site = Starlette(routes=self._routes(), lifespan=self._lifespan,
                              exception_handlers={HTTPException: _http_error, GatewayError: _gateway_error})
        self.site.router.redirect_slashes = False  # its redirect would name the client's Host header

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.site(scope, receive, send)
            return
        inbound = self.inbounds.get(scope["path"])
        if inbound is not None and scope["method"] == "POST" and self.runtime is not None:
            await self.pipeline(scope, receive, send, self.runtime, inbound)
            return
        if scope["path"] == COUNT_TOKENS and scope["method"] == "POST" and self.runtime is not None:
            await self.messages.count_tokens(scope, receive, send, self.runtime, self.settings.max_body_bytes)
            return
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

    @contextlib.asynccontextmanager
    async def _lifespan(self, _: Starlette) -> AsyncIterator[None]:
        session = new_session()

        def apply(policy: Policy) -> None:
            warn_of_public_keys(policy)
            self.policy = policy
            self.runtime = Runtime.build(policy, session)
            logs.adopt_foreign_loggers()  # building an upstream client may have imported litellm just now
            self.metrics.set_policy(policy.hash)
            self.capacity.start(policy, session)
            known = {name: STATE_VALUES[state] for name, state in self.circuits.states().items()}
            self.metrics.show_circuits({name: known.get(name, CLOSED) for name in policy.doc.upstreams})

        apply(self.policy)
        logger.info("serving policy %s (hash %s)", self.policy_path, self.policy.hash)
        self.reloader = Reloader(self.settings.policy, self.metrics, apply, self.settings.reload_interval_s)
        tasks = [asyncio.create_task(self.reloader.run()), asyncio.create_task(self.audit.run()),
                 asyncio.create_task(self._flush_metrics())]
        try:
            with _sighup_handler(self.reloader.request):
                yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.capacity.close()
            self.audit.close()
            self.runtime = None
            self.reloader = None
            await session.close()
            await self.ledger.backend.close()

    async def _flush_metrics(self) -> None:
        """Apply tallied metric updates once a second, so other workers' scrapes see them too."""
        try:
            while True:
                await asyncio.sleep(METRICS_FLUSH_S)
                self.metrics.flush()
        finally:
            self.metrics.flush()

    def _routes(self) -> list[Route]:
        routes = [Route("/v1/models", self.models), Route("/v1/models/{model:path}", self.model),
                  Route("/healthz", self.healthz), Route("/readyz", self.readyz), Route("/admin/spend", self.spend)]
        if self.settings.metrics_port is None:
            routes.append(Route("/metrics", self.prometheus))
        return routes

    async def spend(self, request: Request) -> Response:
        """Spend, budget left and savings per tenant and upstream (admin key only)."""
        runtime = self._ready()
        report = await self.admin.spend(runtime.policy, dict(request.headers), dict(request.query_params))
        return Response(orjson.dumps(report), media_type="application/json")

    async def models(self, request: Request) -> Response:
        """The routes this key may use, in OpenAI's list shape."""
        runtime = self._ready()
        tenant = authenticate(runtime.policy, bearer(request.headers))
        names = runtime.policy.routes_for(runtime.policy.doc.tenants[tenant])
        data = [{"id": name, "object": "model", "created": 0, "owned_by": "switchyard"} for name in names]
        return Response(orjson.dumps({"object": "list", "data": data}), media_type="application/json")

    async def model(self, request: Request) -> Response:
        """One route this key may use, as OpenAI's model object (`models.retrieve`); 404 model_not_found if not."""
        runtime = self._ready()
        tenant = authenticate(runtime.policy, bearer(request.headers))
        name = check_route(runtime.policy, tenant, {"model": request.path_params["model"]})
        data = {"id": name, "object": "model", "created": 0, "owned_by": "switchyard"}
        return Response(orjson.dumps(data), media_type="application/json")

    async def healthz(self, _: Request) -> Response:
        """Alive: the process answers."""
        return JSONResponse({"status": "ok"})

    async def readyz(self, _: Request) -> Response:
        """Ready: the policy is loaded and the upstream session is open."""
        if self.runtime is None:
            return JSONResponse({"status": "starting"}, status_code=503)
        state = {"backend": self.ledger.backend.name, "available": self.ledger.available(time.time()),
                 "on_unavailable": self.runtime.policy.doc.state.on_unavailable}
        return JSONResponse({"status": "ready", "policy": self.runtime.policy.hash, "circuits": self.circuits.states(),
                             "state": state})

    async def prometheus(self, _: Request) -> Response:
        """Every metric, in Prometheus' text format."""
        return Response(self.metrics.exposition(), media_type=CONTENT_TYPE.decode())

    def _ready(self) -> Runtime:
        if self.runtime is None:
            raise GatewayError("the gateway is not ready", status=503, code="not_ready")
        return self.runtime


def _tagging(send: Send, identity: Headers) -> Send:
    """send, with identity's headers added to the start of the response."""
    async def tagged(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", ()), *identity]
        await send(message)
    return tagged


@contextlib.contextmanager
def _sighup_handler(callback: Callable[[], None]) -> Iterator[None]:
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGHUP, callback)
    except (ValueError, RuntimeError, NotImplementedError):  # not the main thread (tests), or no SIGHUP here
        yield
        return
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGHUP)


async def _send_error(send: Send, inbound: Inbound, error: GatewayError, extra: Headers) -> None:
    """Send error in inbound's shape."""
    reply = inbound.error(error)
    await send_bytes(send, reply.status, reply.body, reply.content_type, [*reply.headers, *extra])


async def _gateway_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    return Response(error_body(exc), status_code=exc.status, media_type="application/json")


async def _http_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    error: GatewayError
    if exc.status_code == 404:
        error = NotFound("no such endpoint")
    elif exc.status_code == 405:
        error = MethodNotAllowed(str(exc.detail))
    else:
        error = GatewayError(str(exc.detail), status=exc.status_code, code="http_error")
    return Response(error_body(error), status_code=error.status, media_type="application/json")


def create_app() -> Gateway:
    """The app for one worker process, configured from the environment (`switchyard serve --workers N`)."""
    level = os.environ.get("SWITCHYARD_LOG_LEVEL", "info")
    access_log = bool(os.environ.get("SWITCHYARD_ACCESS_LOG"))
    logs.configure(level, (), access_log)  # loading the policy may import litellm, which logs as it loads
    gateway = Gateway(Settings.from_env())
    logs.configure(level, provider_keys(gateway.policy), access_log)
    return gateway


def warn_of_public_keys(policy: Policy) -> None:
    """Log loudly when the policy lets in a key anyone can read in the README."""
    for key in PUBLIC_KEYS:
        found = policy.tenant(key)
        if found is not None:
            logger.warning("THE POLICY ACCEPTS THE PUBLIC DEVELOPMENT KEY printed in the README (tenant '%s'): anyone "
                           "who can reach this gateway can use it. Replace it: `switchyard keys new --tenant NAME`",
                           found[0])


def provider_keys(policy: Policy) -> list[str]:
    """Every provider key in the policy, for the log redactor."""
    return [u.api_key.get_secret_value() for u in policy.doc.upstreams.values() if u.api_key is not None]
