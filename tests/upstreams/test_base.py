"""The two adapter interfaces: every client and exchange the gateway has offers each member they name, alike."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from gateway.inbound.messages.translated import TranslatedUpstream
from gateway.upstreams import base
from gateway.upstreams.litellm_adapter import Answer, EventStream, LitellmUpstream
from gateway.upstreams.messages import MessagesUpstream
from gateway.upstreams.openai import Exchange, OpenAIUpstream

pytestmark = pytest.mark.filterwarnings("ignore:.*`ReadOnly` qualifier:UserWarning")  # litellm's, at import


def members(protocol: type) -> tuple[set[str], dict[str, Any]]:
    """A protocol's data attributes, and its methods by name."""
    methods = {name: value for name, value in vars(protocol).items()
               if inspect.isfunction(value) and not name.startswith("_")}
    return set(protocol.__annotations__), methods


def kind(function: Any) -> str:
    if inspect.isasyncgenfunction(function):
        return "async iterator"
    return "coroutine" if inspect.iscoroutinefunction(function) else "plain"


def declared_kind(function: Any) -> str:
    """What a protocol method is: a coroutine, or plain (a plain one returning an AsyncIterator is an iterator)."""
    if inspect.iscoroutinefunction(function):
        return "coroutine"
    return "async iterator" if "AsyncIterator" in str(inspect.signature(function).return_annotation) else "plain"


@pytest.mark.parametrize("exchange", [Exchange, Answer, EventStream])
def test_every_exchange_has_the_exchanges_attributes_and_methods_of_the_same_kind(exchange: type) -> None:
    attributes, methods = members(base.Exchange)
    assert attributes == {"upstream", "status", "content_type"}
    assert set(methods) == {"read", "chunks", "retry_after", "close"}
    assert attributes <= set(exchange.__slots__)
    for name, declared in methods.items():
        assert kind(getattr(exchange, name)) == declared_kind(declared), name
        assert list(inspect.signature(getattr(exchange, name)).parameters) == list(
            inspect.signature(declared).parameters), name


@pytest.mark.parametrize("client", [OpenAIUpstream, LitellmUpstream, MessagesUpstream, TranslatedUpstream])
def test_every_client_has_the_clients_methods_with_the_same_parameters(client: type) -> None:
    attributes, methods = members(base.Client)
    assert attributes == {"name", "spec"}
    assert set(methods) == {"encode", "send", "aclose"}
    for name, declared in methods.items():
        implemented = getattr(client, name)
        assert kind(implemented) == declared_kind(declared), name
        assert list(inspect.signature(implemented).parameters) == list(inspect.signature(declared).parameters), name
