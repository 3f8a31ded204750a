"""No Messages request gets a 500: bodies generated from the Messages schema with wrong types, extra nesting and
odd values anywhere, wrong methods and odd headers, on /v1/messages and its count_tokens, are answered with an
Anthropic-shaped 4xx error (or served), always with a request id, and leave no budget reserved behind them.

As tests/guarantees/test_no_500.py, for a tenant with a budget, over three routes: one to a fake Anthropic server
(`kind: anthropic`, the request passed through), one to a server declaring the capability `messages`, and one to an
OpenAI-compatible stand-in (the request translated to chat completions).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.asgi import MAX_DEPTH
from gateway.serving.app import Gateway, Settings
from gateway.tools.standin import StandIn
from gateway.tools.standin.messages import MessagesStandIn
from tests.conftest import KEY, OTHER_KEY, Loop, Served, key_hash, upstream_spec, wait_for, write_policy
from tests.guarantees.test_no_500 import ADMIN_KEY, EXAMPLES, ODD, SCHEMA, TEXT, field

ROUTES = ["claude", "native", "translated"]
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 405: "invalid_request_error", 413: "request_too_large",
               415: "invalid_request_error", 429: "rate_limit_error"}

SOURCE = st.one_of(
    st.fixed_dictionaries({"type": field(st.just("base64")), "media_type": field(st.just("image/png")),
                           "data": field(TEXT)}),
    st.fixed_dictionaries({"type": field(st.just("url")), "url": field(TEXT)}),
    st.fixed_dictionaries({"type": field(st.just("text")), "media_type": field(st.just("text/plain")),
                           "data": field(TEXT)}),
)
TEXT_BLOCK = st.fixed_dictionaries({"type": field(st.just("text")), "text": field(TEXT)},
                                   optional={"cache_control": field(st.just({"type": "ephemeral"}))})
BLOCK = st.one_of(
    TEXT_BLOCK,
    st.fixed_dictionaries({"type": field(st.sampled_from(["image", "document"])), "source": field(SOURCE)}),
    st.fixed_dictionaries({"type": field(st.just("tool_use")), "id": field(TEXT), "name": field(TEXT),
                           "input": field(st.dictionaries(TEXT, TEXT, max_size=2))}),
    st.fixed_dictionaries({"type": field(st.just("tool_result")), "tool_use_id": field(TEXT)},
                          optional={"content": field(TEXT | st.lists(TEXT_BLOCK, max_size=2)),
                                    "is_error": field(st.booleans())}),
    st.fixed_dictionaries({"type": field(st.sampled_from(["thinking", "redacted_thinking"])),
                           "thinking": field(TEXT), "data": field(TEXT), "signature": field(TEXT)}),
)
MESSAGE = st.fixed_dictionaries({"role": field(st.sampled_from(["user", "assistant"]))},
                                optional={"content": field(TEXT | st.lists(BLOCK, max_size=3))})
TOOL = st.fixed_dictionaries({"name": field(TEXT)}, optional={
    "description": field(TEXT), "input_schema": field(SCHEMA),
    "type": field(st.sampled_from(["custom", "bash_20250124"])),
    "cache_control": field(st.just({"type": "ephemeral"}))})
CHOICE = st.fixed_dictionaries({"type": field(st.sampled_from(["auto", "any", "tool", "none"]))},
                               optional={"name": field(TEXT), "disable_parallel_tool_use": field(st.booleans())})


def body_for(route: str) -> st.SearchStrategy[dict[str, Any]]:
    """A Messages body for route: mostly the right shape, sometimes anything at all."""
    return st.fixed_dictionaries(
        {"model": field(st.just(route)), "max_tokens": field(st.integers(min_value=1, max_value=64)),
         "messages": field(st.lists(MESSAGE, min_size=1, max_size=3))},
        optional={"system": field(TEXT | st.lists(TEXT_BLOCK, max_size=2)), "tools": field(st.lists(TOOL, max_size=2)),
                  "tool_choice": field(CHOICE), "stop_sequences": field(st.lists(TEXT, max_size=2)),
                  "metadata": field(st.fixed_dictionaries({"user_id": field(TEXT)})),
                  "temperature": field(st.floats(min_value=0, max_value=1)), "top_p": field(st.floats(0, 1)),
                  "top_k": field(st.integers(0, 50)), "stream": field(st.booleans()),
                  "thinking": field(st.fixed_dictionaries({"type": st.just("enabled"),
                                                           "budget_tokens": field(st.integers(1, 64))})),
                  "extra": ODD})


@dataclass
class Rig:
    """The gateway over loopback."""

    gateway: Gateway
    served: Served


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    loop = Loop()
    claude, native, chatty = MessagesStandIn("claude", key="sk-ant-no500"), MessagesStandIn("native"), StandIn("chatty")
    specs = {
        "claude": {"kind": "anthropic", "base_url": loop.serve(claude).url + "/v1", "model": "claude-model",
                   "api_key": "sk-ant-no500", "region": "us", "hosting": "third_party",
                   "cost": {"input_per_mtok": 3.0, "output_per_mtok": 15.0},
                   "capabilities": ["tools", "json", "vision"]},
        "native": upstream_spec(loop.serve(native).url, "native-model", capabilities=["tools", "json", "vision",
                                                                                      "messages"]),
        "chatty": upstream_spec(loop.serve(chatty).url, "chatty-model"),
    }
    routes = {"claude": {"candidates": ["claude"]}, "native": {"candidates": ["native"]},
              "translated": {"candidates": ["chatty"]}}
    tenants = {"acme": {"keys": [key_hash(KEY)], "budget": {"usd_per_day": 1000.0}},
               "limited": {"keys": [key_hash(OTHER_KEY)], "models": ["claude"]}}
    path = write_policy(tmp_path_factory.mktemp("no500-messages"), specs, routes, tenants=tenants)
    gateway = Gateway(Settings(policy=str(path), admin_key=ADMIN_KEY))
    yield Rig(gateway, loop.serve(gateway))
    loop.close()


def send(rig: Rig, raw: bytes, path: str = "/v1/messages", method: str = "POST",
         headers: dict[str, str] | None = None) -> httpx.Response:
    """raw to path as it is, the key in x-api-key (headers sent as latin-1); a stream is read to its end."""
    sent = {name.encode(): value.encode("latin-1") for name, value in {
        "x-api-key": KEY, "content-type": "application/json", "anthropic-version": "2023-06-01",
        **(headers or {})}.items()}
    with httpx.Client(base_url=rig.served.url, timeout=30) as client:
        response = client.request(method, path, content=raw, headers=sent)
        response.read()
        return response


def reserved_usd(rig: Rig) -> float:
    report = httpx.get(rig.served.url + "/admin/spend", params={"tenant": "acme"},
                       headers={"authorization": f"Bearer {ADMIN_KEY}"}).json()
    return float(report["tenants"][0]["reserved_usd"])


def assert_answered(rig: Rig, response: httpx.Response) -> None:
    """A served answer or an Anthropic-shaped 4xx, with a request id, and nothing left reserved."""
    assert response.status_code < 500, response.content[:500]
    assert response.headers.get("x-request-id")
    if response.status_code >= 400:
        shaped = orjson.loads(response.content)
        assert shaped["type"] == "error", shaped
        assert isinstance(shaped["error"]["message"], str)
        assert shaped["error"]["message"]
        assert shaped["error"]["type"] == ERROR_TYPES.get(response.status_code, shaped["error"]["type"])
    wait_for(lambda: reserved_usd(rig) == 0, what="the reservation to be released")


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/messages/count_tokens"])
@pytest.mark.parametrize("route", ROUTES)
def test_generated_bodies_never_get_a_500(rig: Rig, route: str, path: str) -> None:
    @EXAMPLES
    @given(body=body_for(route))
    def check(body: dict[str, Any]) -> None:
        assert_answered(rig, send(rig, json.dumps(body).encode(), path))  # json writes integers of any size

    check()


HI = [{"role": "user", "content": "hi"}]
ODD_BODIES = [
    {"max_tokens": 8, "messages": {"role": "user", "content": "hi"}},
    {"max_tokens": 8, "messages": "hi"}, {"max_tokens": 8, "messages": []}, {"max_tokens": 8, "messages": [5]},
    {"max_tokens": 8, "messages": [{"role": "system", "content": "hi"}]},
    {"max_tokens": 8, "messages": [{"role": "user", "content": 5}]},
    {"max_tokens": 8, "messages": [{"role": "user", "content": None}]},
    {"max_tokens": 8, "messages": [{"role": "user", "content": {"type": "text", "text": "hi"}}]},
    {"max_tokens": 8, "messages": [{"role": "user", "content": [5]}]},
    {"max_tokens": 8, "messages": [{"role": "user", "content": [{"type": 5}]}]},
    {"max_tokens": 8, "messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]},
    {"max_tokens": 8, "messages": [{"role": "user", "content": [{"type": "image", "source": 5}]}]},
    {"max_tokens": 8, "messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "url"}}]}]},
    {"max_tokens": 8, "messages": [{"role": "user", "content": [{"type": "tool_result", "content": 5}]}]},
    {"max_tokens": 8, "messages": [{"role": "user", "content": [{"type": "tool_result", "content": {"a": 1}}]}]},
    {"max_tokens": 8, "messages": [{"role": "assistant", "content": [{"type": "tool_use", "input": "x"}]}]},
    {"max_tokens": 8, "messages": HI, "system": 5}, {"max_tokens": 8, "messages": HI, "system": [5]},
    {"max_tokens": 8, "messages": HI, "system": [{"type": "image"}]},
    {"max_tokens": 8, "messages": HI, "tools": 5}, {"max_tokens": 8, "messages": HI, "tools": [5]},
    {"max_tokens": 8, "messages": HI, "tools": [{"name": "f", "input_schema": 5}]},
    {"max_tokens": 8, "messages": HI, "tools": [{"name": "f", "description": 5}]},
    {"max_tokens": 8, "messages": HI, "tool_choice": "auto"}, {"max_tokens": 8, "messages": HI, "tool_choice": {}},
    {"max_tokens": 8, "messages": HI, "tool_choice": {"type": "tool"}},
    {"max_tokens": 8, "messages": HI, "stop_sequences": "END"}, {"max_tokens": 8, "messages": HI, "stop_sequences": 5},
    {"max_tokens": 8, "messages": HI, "metadata": 5}, {"max_tokens": 8, "messages": HI, "metadata": {"user_id": 5}},
    {"max_tokens": 8, "messages": HI, "stream": "yes"}, {"max_tokens": 8, "messages": HI, "temperature": "hot"},
    {"max_tokens": 8, "messages": HI, "top_k": "x"}, {"max_tokens": 8, "messages": HI, "thinking": 5},
    {"messages": HI}, {"max_tokens": None, "messages": HI}, {"max_tokens": "8", "messages": HI},
    {"max_tokens": 0, "messages": HI}, {"max_tokens": -1, "messages": HI}, {"max_tokens": 8.0, "messages": HI},
    {"max_tokens": True, "messages": HI}, {"max_tokens": 2**63 - 1, "messages": HI},
    {"max_tokens": 1e30, "messages": HI}, {"max_tokens": 8, "messages": HI, "x" * 10_000: "y"},
]


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/messages/count_tokens"])
@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("index", range(len(ODD_BODIES)))
def test_odd_bodies_are_answered_or_a_400(rig: Rig, route: str, path: str, index: int) -> None:
    response = send(rig, orjson.dumps({"model": route, **ODD_BODIES[index]}), path)
    assert_answered(rig, response)
    assert response.status_code in (200, 400, 429), response.content[:300]  # 429: a max_tokens over the budget


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/messages/count_tokens"])
def test_a_body_that_is_not_json_or_not_an_object_is_a_400(rig: Rig, path: str) -> None:
    for raw in (b"", b"{", b"[]", b"null", b'"claude"', b"5", b"\xff\xfe", b'{"model": "claude", "messages": [NaN]}',
                b'{"model": "claude", "max_tokens": 8, "messages": [{"role": "user", "content": "\\ud800"}]}'):
        response = send(rig, raw, path)
        assert_answered(rig, response)
        assert response.status_code == 400, raw


@pytest.mark.parametrize("max_tokens", [b"18446744073709551616", b"1" + b"0" * 400, b"1e400", b"-0"])
def test_a_max_tokens_no_integer_type_holds_is_a_400(rig: Rig, max_tokens: bytes) -> None:
    raw = b'{"model":"translated","messages":[{"role":"user","content":"hi"}],"max_tokens":' + max_tokens + b"}"
    response = send(rig, raw)
    assert_answered(rig, response)
    assert response.status_code == 400


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/messages/count_tokens"])
@pytest.mark.parametrize("depth", [100, 500, 5000])
def test_deep_nesting_is_refused_with_a_400(rig: Rig, path: str, depth: int) -> None:
    nested = b"[" * depth + b"]" * depth
    raw = b'{"model":"translated","max_tokens":8,"messages":[{"role":"user","content":"hi"}],"x":' + nested + b"}"
    response = send(rig, raw, path)
    assert_answered(rig, response)
    assert response.status_code == (200 if depth + 1 <= MAX_DEPTH else 400)


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/messages/count_tokens"])
def test_a_body_over_the_limit_is_refused(rig: Rig, path: str) -> None:
    huge = orjson.dumps({"model": "translated", "max_tokens": 8, "messages": [{"role": "user",
                                                                               "content": "x" * (12 << 20)}]})
    response = send(rig, huge, path)
    assert_answered(rig, response)
    assert response.status_code == 413


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/messages/count_tokens"])
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_a_wrong_method_is_a_405_in_anthropics_shape(rig: Rig, path: str, method: str) -> None:
    response = send(rig, b"", path, method)
    assert_answered(rig, response)
    assert response.status_code == 405


BODY = orjson.dumps({"model": "translated", "max_tokens": 8, "messages": HI})


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/messages/count_tokens"])
@pytest.mark.parametrize(("headers", "status"), [
    ({"x-api-key": ""}, 401), ({"x-api-key": "wrong"}, 401), ({"x-api-key": KEY + "\u00e9"}, 401),
    ({"x-api-key": "", "authorization": "Basic abc"}, 401), ({"x-api-key": "", "authorization": "Bearer"}, 401),
    ({"content-type": "text/plain"}, None), ({"content-type": "application/json; charset=latin-1"}, None),
    ({"anthropic-version": "not-a-date"}, None), ({"anthropic-beta": "x" * 4000}, None),
], ids=["empty key", "wrong key", "latin-1 key", "basic auth", "empty bearer", "text content", "latin-1 charset",
        "odd version", "long beta"])
def test_odd_headers_are_answered_in_anthropics_shape(rig: Rig, path: str, headers: dict[str, str],
                                                       status: int | None) -> None:
    response = send(rig, BODY, path, headers=headers)
    assert_answered(rig, response)
    if status is not None:
        assert response.status_code == status


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/messages/count_tokens"])
@pytest.mark.parametrize("route", ["native", "translated", "no-such-route", ""])
def test_a_route_the_key_may_not_use_is_not_found(rig: Rig, path: str, route: str) -> None:
    """OTHER_KEY's tenant may use only the first route, 'claude'."""
    response = send(rig, orjson.dumps({"model": route, "max_tokens": 8, "messages": HI}), path,
                    headers={"x-api-key": OTHER_KEY})
    assert_answered(rig, response)
    assert (response.status_code, orjson.loads(response.content)["error"]["type"]) in (
        (404, "not_found_error"), (400, "invalid_request_error"))
