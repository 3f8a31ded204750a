"""What Starlette serves: the model list, health, readiness, admin spend and metrics, and its errors' JSON."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.errors import GatewayError, MethodNotAllowed, NotFound
from gateway.inbound.openai import bearer, error_body
from gateway.operations.metrics import CONTENT_TYPE
from gateway.pipeline.auth import authenticate, check_route
from gateway.serving.components import Components

Lifespan = Callable[[Starlette], AbstractAsyncContextManager[None]]


def site(parts: Components, lifespan: Lifespan) -> Starlette:
    """The Starlette app for every path that is not a hot endpoint."""
    routes = Routes(parts)
    app = Starlette(routes=routes.table(), lifespan=lifespan,
                    exception_handlers={HTTPException: _http_error, GatewayError: _gateway_error})
    app.router.redirect_slashes = False  # its redirect would name the client's Host header
    return app


class Routes:
    """The endpoints Starlette serves, reading the gateway's parts."""

    def __init__(self, parts: Components) -> None:
        self.parts = parts

    def table(self) -> list[Route]:
        """Every route; /metrics only when it has no port of its own."""
        routes = [Route("/v1/models", self.models), Route("/v1/models/{model:path}", self.model),
                  Route("/healthz", self.healthz), Route("/readyz", self.readyz), Route("/admin/spend", self.spend)]
        if self.parts.settings.metrics_port is None:
            routes.append(Route("/metrics", self.prometheus))
        return routes

    async def spend(self, request: Request) -> Response:
        """Spend, budget left and savings per tenant and upstream (admin key only)."""
        runtime = self.parts.ready()
        report = await self.parts.admin.spend(runtime.policy, dict(request.headers), dict(request.query_params))
        return Response(orjson.dumps(report), media_type="application/json")

    async def models(self, request: Request) -> Response:
        """The routes this key may use, in OpenAI's list shape."""
        runtime = self.parts.ready()
        tenant = authenticate(runtime.policy, bearer(request.headers))
        names = runtime.policy.routes_for(runtime.policy.doc.tenants[tenant])
        data = [{"id": name, "object": "model", "created": 0, "owned_by": "switchyard"} for name in names]
        return Response(orjson.dumps({"object": "list", "data": data}), media_type="application/json")

    async def model(self, request: Request) -> Response:
        """One route this key may use, as OpenAI's model object (`models.retrieve`); 404 model_not_found if not."""
        runtime = self.parts.ready()
        tenant = authenticate(runtime.policy, bearer(request.headers))
        name = check_route(runtime.policy, tenant, {"model": request.path_params["model"]})
        data = {"id": name, "object": "model", "created": 0, "owned_by": "switchyard"}
        return Response(orjson.dumps(data), media_type="application/json")

    async def healthz(self, _: Request) -> Response:
        """Alive: the process answers."""
        return JSONResponse({"status": "ok"})

    async def readyz(self, _: Request) -> Response:
        """Ready: the policy is loaded and the upstream session is open."""
        runtime, ledger = self.parts.runtime, self.parts.ledger
        if runtime is None:
            return JSONResponse({"status": "starting"}, status_code=503)
        state = {"backend": ledger.backend.name, "available": ledger.available(time.time()),
                 "on_unavailable": runtime.policy.doc.state.on_unavailable}
        return JSONResponse({"status": "ready", "policy": runtime.policy.hash, "circuits": self.parts.circuits.states(),
                             "state": state})

    async def prometheus(self, _: Request) -> Response:
        """Every metric, in Prometheus' text format."""
        return Response(self.parts.metrics.exposition(), media_type=CONTENT_TYPE.decode())


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
