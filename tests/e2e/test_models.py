"""GET /v1/models/{id}: the SDK's `models.retrieve` for the routes a key may use, OpenAI's 404 for the rest."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import OTHER_KEY, Loop, Stack, start_stack


@pytest.fixture
def routes(loop: Loop, tmp_path: Path) -> Stack:
    """Routes chat (every tenant) and acme/big (only KEY's tenant; OTHER_KEY's may use only the first)."""
    return start_stack(loop, tmp_path, models={"chat": {"candidates": ["primary"]},
                                               "acme/big": {"candidates": ["fallback"]}})


def test_retrieve_returns_a_route_the_key_may_use(routes: Stack) -> None:
    for name in ("chat", "acme/big"):
        model = routes.client().models.retrieve(name)
        assert (model.id, model.object, model.owned_by) == (name, "model", "switchyard")


@pytest.mark.parametrize(("name", "key_is_other"), [("gpt-5", False), ("acme/big", True)])
def test_an_unknown_or_not_allowed_route_is_openais_404(routes: Stack, name: str, key_is_other: bool) -> None:
    client = routes.client(OTHER_KEY) if key_is_other else routes.client()
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve(name)
    error = caught.value.response.json()["error"]
    assert (error["code"], error["type"], error["param"]) == ("model_not_found", "invalid_request_error", "model")
    assert f"the model '{name}' does not exist or you do not have access to it" in error["message"]
    if key_is_other:  # the routes it may use are listed, never the others
        assert error["message"].endswith("available: chat")


def test_retrieve_needs_a_valid_key(routes: Stack) -> None:
    response = httpx.get(routes.base_url + "/models/chat")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        routes.client("sk-sy-nobody").models.retrieve("chat")
