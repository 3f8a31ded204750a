"""What Starlette serves, on loopback: models by key, health and readiness, metrics where asked, errors as JSON."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from gateway.pipeline.runtime import Runtime
from gateway.serving.components import Components
from gateway.serving.routes import site
from gateway.serving.settings import Settings
from tests.conftest import KEY, OTHER_KEY, Loop, upstream_spec, write_policy

AUTH = {"authorization": f"Bearer {KEY}"}


@contextlib.asynccontextmanager
async def no_lifespan(_: Starlette) -> AsyncIterator[None]:
    yield


def parts_of(folder: Path, **settings: Any) -> Components:
    models = {"chat": {"candidates": ["a"]}, "big": {"candidates": ["a"]}}
    path = write_policy(folder, {"a": upstream_spec("http://127.0.0.1:1")}, models)
    return Components(Settings(policy=str(path), **settings))


def serve(loop: Loop, parts: Components) -> str:
    return loop.serve(site(parts, no_lifespan)).url


@pytest.fixture
def ready(loop: Loop, tmp_path: Path) -> tuple[Components, str]:
    parts = parts_of(tmp_path)
    parts.runtime = Runtime(parts.policy, {})
    return parts, serve(loop, parts)


def test_the_models_a_key_may_use_are_listed_in_openais_shape(ready: tuple[Components, str]) -> None:
    url = ready[1]
    listed = httpx.get(url + "/v1/models", headers=AUTH).json()
    assert listed == {"object": "list", "data": [
        {"id": "chat", "object": "model", "created": 0, "owned_by": "switchyard"},
        {"id": "big", "object": "model", "created": 0, "owned_by": "switchyard"}]}
    limited = httpx.get(url + "/v1/models", headers={"authorization": f"Bearer {OTHER_KEY}"}).json()
    assert [model["id"] for model in limited["data"]] == ["chat"]


def test_one_model_is_retrieved_or_is_a_404_in_openais_error_shape(ready: tuple[Components, str]) -> None:
    url = ready[1]
    assert httpx.get(url + "/v1/models/big", headers=AUTH).json()["id"] == "big"
    other = httpx.get(url + "/v1/models/big", headers={"authorization": f"Bearer {OTHER_KEY}"})
    assert other.status_code == 404
    assert other.json()["error"]["code"] == "model_not_found"
    assert other.headers["content-type"] == "application/json"


def test_the_models_without_a_key_are_a_401(ready: tuple[Components, str]) -> None:
    response = httpx.get(ready[1] + "/v1/models")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_readiness_names_the_policy_circuits_and_state(ready: tuple[Components, str]) -> None:
    parts, url = ready
    assert httpx.get(url + "/healthz").json() == {"status": "ok"}
    body = httpx.get(url + "/readyz").json()
    assert (body["status"], body["policy"]) == ("ready", parts.policy.hash)
    assert body["state"] == {"backend": "memory", "available": True, "on_unavailable": "fail_closed"}
    assert isinstance(body["circuits"], dict)


def test_before_a_runtime_the_gateway_is_alive_starting_and_not_ready(loop: Loop, tmp_path: Path) -> None:
    url = serve(loop, parts_of(tmp_path))
    assert httpx.get(url + "/healthz").status_code == 200
    starting = httpx.get(url + "/readyz")
    assert (starting.status_code, starting.json()) == (503, {"status": "starting"})
    models = httpx.get(url + "/v1/models", headers=AUTH)
    assert (models.status_code, models.json()["error"]["code"]) == (503, "not_ready")


def test_metrics_are_served_here_only_without_a_port_of_their_own(loop: Loop, tmp_path: Path) -> None:
    here = httpx.get(serve(loop, parts_of(tmp_path)) + "/metrics")
    assert here.status_code == 200
    assert here.headers["content-type"].startswith("text/plain")
    (tmp_path / "own").mkdir()
    elsewhere = httpx.get(serve(loop, parts_of(tmp_path / "own", metrics_port=9)) + "/metrics")
    assert elsewhere.status_code == 404


def test_unknown_paths_and_wrong_methods_are_openai_shaped_errors(ready: tuple[Components, str]) -> None:
    url = ready[1]
    missing = httpx.get(url + "/v1/nothing-here")
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "not_found")
    assert missing.json()["error"]["message"] == "no such endpoint"
    wrong = httpx.post(url + "/healthz")
    assert (wrong.status_code, wrong.json()["error"]["code"]) == (405, "method_not_allowed")


def test_a_trailing_slash_is_not_redirected_to_a_host_the_client_named(ready: tuple[Components, str]) -> None:
    response = httpx.get(ready[1] + "/healthz/", headers={"host": "evil.example"})
    assert response.status_code == 404
    assert "location" not in response.headers
