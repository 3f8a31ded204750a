"""Who is asking and which routes they may use: 401 without a key a tenant holds, 400 or 404 for a bad model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.errors import AuthenticationFailed, InvalidRequest, ModelNotFound
from gateway.pipeline.auth import authenticate, check_route
from gateway.routing.policy.loader import load_policy
from gateway.routing.policy.model import Policy
from tests.conftest import KEY, OTHER_KEY, upstream_spec, write_policy


@pytest.fixture
def policy(tmp_path: Path) -> Policy:
    models = {"chat": {"candidates": ["primary"]}, "big": {"candidates": ["primary"]}}
    return load_policy(write_policy(tmp_path, {"primary": upstream_spec("http://127.0.0.1:1")}, models))


def test_a_held_key_names_its_tenant(policy: Policy) -> None:
    assert authenticate(policy, KEY) == "acme"
    assert authenticate(policy, OTHER_KEY) == "limited"


def test_a_missing_key_is_told_how_to_send_one(policy: Policy) -> None:
    with pytest.raises(AuthenticationFailed) as caught:
        authenticate(policy, "", hint="x-api-key: <key>")
    assert (caught.value.status, caught.value.message) == (401, "missing API key: send 'x-api-key: <key>'")
    with pytest.raises(AuthenticationFailed, match="Authorization: Bearer <key>"):
        authenticate(policy, "")


def test_an_unknown_key_is_refused_without_being_echoed(policy: Policy) -> None:
    with pytest.raises(AuthenticationFailed) as caught:
        authenticate(policy, "sk-sy-nobody-holds-this-0123456789abcdef")
    assert caught.value.message == "invalid API key"


def test_a_route_the_tenant_may_use_is_returned(policy: Policy) -> None:
    assert check_route(policy, "acme", {"model": "big"}) == "big"
    assert check_route(policy, "limited", {"model": "chat"}) == "chat"


@pytest.mark.parametrize("body", [{}, {"model": ""}, {"model": 7}, {"model": None}])
def test_a_missing_or_non_string_model_is_a_400_on_model(policy: Policy, body: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest) as caught:
        check_route(policy, "acme", body)
    assert (caught.value.status, caught.value.param) == (400, "model")


def test_a_route_the_tenant_may_not_use_is_a_404_listing_those_it_may(policy: Policy) -> None:
    with pytest.raises(ModelNotFound) as caught:
        check_route(policy, "limited", {"model": "big"})
    assert caught.value.status == 404
    assert caught.value.message.endswith("available: chat")
    with pytest.raises(ModelNotFound, match="available: chat, big"):
        check_route(policy, "acme", {"model": "nope"})
