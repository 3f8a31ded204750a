"""No body gets a 500: request bodies generated from each endpoint's schema, with wrong types, extra nesting and odd
values anywhere, are answered with an OpenAI-shaped 4xx error (or served), always with a request id, and leave no
budget reserved behind them.

The gateway runs over loopback in front of a stand-in upstream, for a tenant with a budget, so every admitted request
makes a reservation that must be settled or released.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.asgi import MAX_DEPTH
from gateway.serving.app import Gateway, Settings
from gateway.tools.standin import StandIn
from tests.conftest import KEY, Loop, Stack, key_hash, upstream_spec, wait_for, write_policy

ADMIN_KEY = "sy-admin-no-500-key-0123456789abcdef"
EXAMPLES = settings(max_examples=40, derandomize=True, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
PATHS = {"chat": "/chat/completions", "completions": "/completions", "embeddings": "/embeddings",
         "responses": "/responses"}

# Any JSON value, nested a little: what a careless or hostile client puts where a field belongs.
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12),
                    st.sampled_from(["", "user", "function", "text", "image_url", "json_schema", "auto", "x" * 300]))
ODD = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.sampled_from(["type", "text", "function", "name", "arguments", "url", "content", "x"]), inner, max_size=3),
    max_leaves=10)


def field(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A field's value: mostly the right shape, sometimes anything at all."""
    return st.one_of(valid, valid, ODD)


TEXT = st.text(max_size=30)
SCHEMA = st.fixed_dictionaries({"type": field(st.just("object"))},
                               optional={"properties": field(st.dictionaries(TEXT, st.just({"type": "string"}),
                                                                             max_size=2))})
PART = st.one_of(
    st.fixed_dictionaries({"type": field(st.just("text")), "text": field(TEXT)}),
    st.fixed_dictionaries({"type": field(st.just("image_url")),
                           "image_url": field(st.fixed_dictionaries({"url": field(TEXT)}))}),
    st.fixed_dictionaries({"type": field(st.just("input_audio")),
                           "input_audio": field(st.fixed_dictionaries({"data": TEXT, "format": TEXT}))}),
    st.fixed_dictionaries({"type": field(st.just("file")),
                           "file": field(st.fixed_dictionaries({}, optional={"filename": TEXT, "file_data": TEXT}))}),
)
FUNCTION = st.fixed_dictionaries({"name": field(TEXT)},
                                 optional={"description": field(TEXT), "parameters": field(SCHEMA),
                                           "arguments": field(TEXT)})
TOOL_CALL = st.fixed_dictionaries({"id": field(TEXT), "type": field(st.just("function")), "function": field(FUNCTION)})
MESSAGE = st.fixed_dictionaries(
    {"role": field(st.sampled_from(["system", "user", "assistant", "tool"]))},
    optional={"content": field(TEXT | st.lists(PART, max_size=3)), "name": field(TEXT),
              "tool_calls": field(st.lists(TOOL_CALL, max_size=2)), "function_call": field(FUNCTION),
              "tool_call_id": field(TEXT)})
COMMON = {
    "max_tokens": field(st.integers(min_value=1, max_value=64)), "n": field(st.integers(min_value=1, max_value=2)),
    "temperature": field(st.floats(min_value=0, max_value=2)), "user": field(TEXT), "stop": field(TEXT),
    "metadata": field(st.dictionaries(TEXT, TEXT, max_size=2)), "stream": field(st.booleans()),
    "stream_options": field(st.fixed_dictionaries({"include_usage": field(st.booleans())})), "extra": ODD,
}
CHAT = st.fixed_dictionaries(
    {"model": field(st.just("chat")), "messages": field(st.lists(MESSAGE, min_size=1, max_size=3))},
    optional={**COMMON, "tools": field(st.lists(st.fixed_dictionaries({"type": field(st.just("function")),
                                                                       "function": field(FUNCTION)}), max_size=2)),
              "functions": field(st.lists(FUNCTION, max_size=2)), "tool_choice": field(st.just("auto")),
              "response_format": field(st.fixed_dictionaries({"type": field(st.just("json_object"))})),
              "prediction": field(st.fixed_dictionaries({"type": st.just("content"), "content": field(TEXT)})),
              "text": ODD, "max_completion_tokens": field(st.integers(min_value=1, max_value=64))})
PROMPT = TEXT | st.lists(TEXT | st.integers(0, 50_000), max_size=3) | st.lists(st.lists(st.integers(0, 9)), max_size=2)
COMPLETIONS = st.fixed_dictionaries({"model": field(st.just("chat")), "prompt": field(PROMPT)},
                                    optional={**COMMON, "suffix": field(TEXT), "echo": field(st.booleans())})
EMBEDDINGS = st.fixed_dictionaries({"model": field(st.just("chat")), "input": field(PROMPT)},
                                   optional={"user": field(TEXT), "dimensions": field(st.integers(1, 8)),
                                             "encoding_format": field(st.just("float")), "extra": ODD})
ITEM = st.one_of(
    st.fixed_dictionaries({"role": field(st.just("user")), "content": field(TEXT | st.lists(
        st.fixed_dictionaries({"type": field(st.just("input_text")), "text": field(TEXT)}), max_size=2))}),
    st.fixed_dictionaries({"type": field(st.just("function_call_output")), "call_id": field(TEXT),
                           "output": field(TEXT)}),
)
RESPONSES = st.fixed_dictionaries(
    {"model": field(st.just("chat")), "input": field(TEXT | st.lists(ITEM, max_size=3))},
    optional={"instructions": field(TEXT), "max_output_tokens": field(st.integers(min_value=16, max_value=64)),
              "text": field(st.fixed_dictionaries({"format": field(st.fixed_dictionaries(
                  {"type": st.just("json_object")}))})),
              "tools": field(st.lists(st.fixed_dictionaries({"type": field(st.just("function")), "name": field(TEXT),
                                                             "parameters": field(SCHEMA)}), max_size=2)),
              "stream": field(st.booleans()), "metadata": field(st.dictionaries(TEXT, TEXT, max_size=2)),
              "extra": ODD})
BODIES = {"chat": CHAT, "completions": COMPLETIONS, "embeddings": EMBEDDINGS, "responses": RESPONSES}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A gateway in front of one stand-in, for a tenant with a budget large enough never to refuse."""
    loop = Loop()
    upstream = StandIn("upstream")
    spec = upstream_spec(loop.serve(upstream).url, capabilities=["tools", "json", "vision", "responses"])
    tenants = {"acme": {"keys": [key_hash(KEY)], "budget": {"usd_per_day": 1000.0}}}
    path = write_policy(tmp_path_factory.mktemp("no500"), {"upstream": spec}, {"chat": {"candidates": ["upstream"]}},
                        tenants=tenants)
    gateway = Gateway(Settings(policy=str(path), admin_key=ADMIN_KEY))
    yield Stack(gateway, loop.serve(gateway), {"upstream": upstream}, loop)
    loop.close()


def post(stack: Stack, endpoint: str, body: Any) -> tuple[int, httpx.Headers, bytes]:
    """POST body as it is with the openai client (a stream is read to its end); status, headers and body bytes."""
    try:
        response = stack.client().post(PATHS[endpoint], body=body, cast_to=httpx.Response)
    except openai.APIStatusError as exc:
        return exc.status_code, exc.response.headers, exc.response.read()
    return response.status_code, response.headers, response.read()


def post_bytes(stack: Stack, endpoint: str, raw: bytes) -> tuple[int, httpx.Headers, bytes]:
    """POST raw bytes (JSON the SDK could not encode, such as deep nesting)."""
    with httpx.Client(base_url=stack.base_url, headers={"authorization": f"Bearer {KEY}"}) as client:
        response = client.post(PATHS[endpoint], content=raw, headers={"content-type": "application/json"})
        return response.status_code, response.headers, response.content


def reserved_usd(stack: Stack) -> float:
    report = httpx.get(stack.served.url + "/admin/spend", params={"tenant": "acme"},
                       headers={"authorization": f"Bearer {ADMIN_KEY}"}).json()
    return float(report["tenants"][0]["reserved_usd"])


def assert_answered(stack: Stack, status: int, headers: httpx.Headers, body: bytes) -> None:
    """A served answer or an OpenAI-shaped 4xx, with a request id, and nothing left reserved."""
    assert status < 500, body[:500]
    assert headers.get("x-request-id")
    if status >= 400:
        error = orjson.loads(body)["error"]
        assert isinstance(error["message"], str)
        assert error["message"]
        assert isinstance(error["type"], str)
        assert {"param", "code"} <= error.keys()
    wait_for(lambda: reserved_usd(stack) == 0, what="the reservation to be released")


@pytest.mark.parametrize("endpoint", BODIES)
def test_generated_bodies_never_get_a_500(stack: Stack, endpoint: str) -> None:
    @EXAMPLES
    @given(body=BODIES[endpoint])
    def check(body: dict[str, Any]) -> None:
        assert_answered(stack, *post(stack, endpoint, body))

    check()


@pytest.mark.parametrize("body", [
    {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "text": "x"},
    {"model": "chat", "messages": [{"role": "user", "content": "hi", "tool_calls": 5}]},
    {"model": "chat", "messages": [{"role": "user", "content": [{"type": ["text"], "text": "hi"}]}]},
    {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function"}]},
    {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "stream_options": [True]},
    {"model": "chat", "messages": {"role": "user"}},
    {"model": ["chat"], "messages": [{"role": "user", "content": "hi"}]},
], ids=["text string", "tool_calls 5", "part type list", "tool without function", "stream_options list",
        "messages object", "model list"])
def test_the_reported_wrong_types_are_a_400_naming_the_param(stack: Stack, body: dict[str, Any]) -> None:
    status, headers, raw = post(stack, "chat", body)
    assert_answered(stack, status, headers, raw)
    if status != 200:
        assert status == 400


@pytest.mark.parametrize("body", [
    {"model": "chat", "input": "hi", "text": "x"},
    {"model": "chat", "input": [{"role": "user", "content": 5}]},
    {"model": "chat", "input": [5]},
], ids=["text string", "content number", "item number"])
def test_wrong_types_on_responses_are_a_400(stack: Stack, body: dict[str, Any]) -> None:
    status, headers, raw = post(stack, "responses", body)
    assert_answered(stack, status, headers, raw)
    assert status == 400
    assert orjson.loads(raw)["error"]["param"] in ("text", "input[0].content", "input[0]")


@pytest.mark.parametrize("depth", [100, 240, 247, 248, 254, 255, 256, 500, 1023, 1024, 1025, 5000])
@pytest.mark.parametrize("where", ["metadata", "content"])
def test_deep_nesting_is_refused_with_a_400(stack: Stack, depth: int, where: str) -> None:
    nested = b"[" * depth + b"]" * depth
    prefix = b'{"model":"chat","messages":[{"role":"user","content":'
    if where == "metadata":
        raw = prefix + b'"hi"}],"metadata":{"deep":' + nested + b"}}"
        total = depth + 2
    else:
        raw = prefix + nested + b"}]}"
        total = depth + 3
    status, headers, body = post_bytes(stack, "chat", raw)
    assert_answered(stack, status, headers, body)
    if total > MAX_DEPTH:
        assert status == 400
        assert b"nest" in body or b"recursion" in body.lower()
    else:  # deep metadata is fine; content must hold parts, not arrays
        assert status == (200 if where == "metadata" else 400)


def test_a_body_that_is_not_json_or_not_an_object_is_a_400(stack: Stack) -> None:
    for raw in (b"", b"{", b"[]", b"null", b'"chat"', b"\xff\xfe", b'{"model": "chat", "messages": [NaN]}'):
        status, headers, body = post_bytes(stack, "chat", raw)
        assert_answered(stack, status, headers, body)
        assert status == 400, raw


HI = [{"role": "user", "content": "hi"}]
ODD_BODIES = {
    "chat": [
        {"model": "chat", "messages": HI, "n": 2.0}, {"model": "chat", "messages": HI, "max_tokens": 2**64},
        {"model": "chat", "messages": HI, "max_tokens": 1e30}, {"model": "chat", "messages": HI, "temperature": "hot"},
        {"model": "chat", "messages": HI, "stream": True, "stream_options": {"include_usage": "yes"}},
        {"model": "chat", "messages": HI, "stream": "true"}, {"model": "chat", "messages": HI, "tools": []},
        {"model": "chat", "messages": HI, "tools": [{"type": "function", "function": {"name": 5}}]},
        {"model": "chat", "messages": HI, "response_format": {"type": "json_schema", "json_schema": 5}},
        {"model": "chat", "messages": HI, "logit_bias": {"x": "y"}}, {"model": "chat", "messages": HI, "stop": 5},
        {"model": "chat", "messages": [{"role": 5, "content": "hi"}]},
        {"model": "chat", "messages": [{"role": "user", "content": [{"type": "text"}]}]},
        {"model": "chat", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": 5}]}]},
        {"model": "chat", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": None}]}]},
        {"model": "chat", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
        {"model": "chat", "messages": [{"role": "assistant", "tool_calls": [{"function": {"arguments": 5}}]}]},
        {"model": "chat", "messages": HI, "x" * 10_000: "y"}, {"model": "", "messages": HI},
        {"model": "nope", "messages": HI}, {"model": "chat\u0000", "messages": HI},
    ],
    "completions": [
        {"model": "chat", "prompt": []}, {"model": "chat", "prompt": [[]]}, {"model": "chat", "prompt": [[[1]]]},
        {"model": "chat", "prompt": "hi", "best_of": 2.0}, {"model": "chat", "prompt": "hi", "n": 2, "best_of": 1},
        {"model": "chat", "prompt": [-1, 2**70]}, {"model": "chat", "prompt": "hi", "suffix": 5},
        {"model": "chat", "prompt": "hi", "logprobs": 99},
    ],
    "embeddings": [
        {"model": "chat", "input": []}, {"model": "chat", "input": [[]]}, {"model": "chat", "input": ""},
        {"model": "chat", "input": "hi", "dimensions": -1}, {"model": "chat", "input": "hi", "encoding_format": 5},
    ],
    "responses": [
        {"model": "chat", "input": []}, {"model": "chat", "input": [{"type": "function_call_output"}]},
        {"model": "chat", "input": "hi", "tools": [{"type": "mcp"}]},
        {"model": "chat", "input": "hi", "max_output_tokens": 0},
        {"model": "chat", "input": "hi", "text": {"format": 5}},
        {"model": "chat", "input": "hi", "conversation": 5}, {"model": "chat", "input": "hi", "stream": True,
                                                                "max_output_tokens": 5},
        {"model": "chat", "input": [{"role": "user", "content": [{"type": "input_image"}]}]},
        {"model": "chat", "input": [{"role": "user", "content": [{"type": "input_file", "file_data": 5}]}]},
    ],
}


@pytest.mark.parametrize(("endpoint", "index"), [(e, i) for e, bodies in ODD_BODIES.items()
                                                 for i in range(len(bodies))])
def test_odd_values_in_known_fields_never_get_a_500(stack: Stack, endpoint: str, index: int) -> None:
    assert_answered(stack, *post(stack, endpoint, ODD_BODIES[endpoint][index]))


@pytest.mark.parametrize("raw", [
    rb'{"model": "chat", "messages": [{"role": "user", "content": "\ud800"}]}',
    rb'{"model": "chat", "messages": [{"role": "user", "content": "hi", "\udfff": 1}]}',
    rb'{"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1e400}',
    rb'{"model": "chat", "messages": [{"role": "user", "content": "hi"}], "n": 100000000000000000000000}',
    rb'{"model": "chat", "model": "chat", "messages": [{"role": "user", "content": "hi"}]}',
], ids=["lone surrogate", "surrogate key", "1e400", "huge n", "duplicate key"])
def test_json_the_sdk_cannot_send_never_gets_a_500(stack: Stack, raw: bytes) -> None:
    assert_answered(stack, *post_bytes(stack, "chat", raw))
