"""Residency on the Messages API against any client: personal data in any field a Messages request can carry,
written any way the detectors might miss, is served only where its class may go.

As tests/guarantees/test_residency.py, whose hits and evasions it reuses: `personal: {hosting: [self]}`, every
detector on, a route `[thirdparty, selfhost]`. Here the third party is a `kind: anthropic` upstream (the request
passes through to it untouched) and the self-hosted one a server declaring the capability `messages`, both fake
Anthropic servers on loopback that remember what they saw; a second route puts an OpenAI-compatible third party
(the request translated) first. Each case sends a hit in one position with the official anthropic client and
checks which upstream answered, that it saw the hit, and that no third party saw anything.

count_tokens carries the prompt too, and is forwarded to the Anthropic upstream the request would go to first: the
same hits in the same positions, counted, must reach no upstream at all (the self-hosted one is not Anthropic, so
the gateway's own estimate answers), while a clean count is the third party's own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import anthropic
import pytest

from gateway.inbound.messages.count import input_tokens
from gateway.serving.app import Gateway, Settings
from gateway.tools.standin import StandIn
from gateway.tools.standin.messages import MessagesStandIn, count_of
from tests.conftest import KEY, Loop, Served, upstream_spec, write_policy
from tests.guarantees.test_residency import CLASSES, DETECT, EVASIONS, HITS

UPSTREAM_KEY = "sk-ant-api03-Residency0Upstream0Key0Kept0Secret"
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8/5+hHgAHggJ/PchI7wAAAABJRU5ErkJggg=="


@dataclass(frozen=True)
class Position:
    """A place in a Messages request where text can ride."""

    build: Callable[[str], dict[str, Any]]
    unreadable: bool = False  # the position itself holds content no detector can read
    translatable: bool = True  # chat completions can carry it (else a translating upstream refuses it, 400)


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def messages(*turns: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"model": "mixed", "max_tokens": 16, "messages": list(turns) or [user("Hello")], **extra}


def tool(**fields: Any) -> dict[str, Any]:
    """A custom tool named lookup, with the given fields replacing its defaults."""
    return {"name": "lookup", "description": "Look a thing up.",
            "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}, **fields}


def call(tool_input: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "lookup",
                                              "input": tool_input}]}


def result(content: Any) -> dict[str, Any]:
    return user([{"type": "tool_result", "tool_use_id": "toolu_1", "content": content}])


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


READABLE = {
    "string content": lambda t: messages(user(f"Please note {t} today.")),
    "text block": lambda t: messages(user([text(f"note {t}")])),
    "text block after a clean one": lambda t: messages(user([text("hello"), text(t)])),
    "assistant text block": lambda t: messages(user("Hi"), {"role": "assistant", "content": [text(t)]}, user("Go")),
    "system string": lambda t: messages(system=f"The customer is {t}."),
    "system blocks": lambda t: messages(system=[text("Be brief."), text(f"The customer is {t}.")]),
    "system block with cache_control": lambda t: messages(system=[{**text(t), "cache_control": {
        "type": "ephemeral"}}]),
    "tool_use input": lambda t: messages(user("Hi"), call({"to": t}), result("ok")),
    "tool_use input, nested": lambda t: messages(user("Hi"), call({"a": [{"b": {"c": [t]}}]}), result("ok")),
    "tool_use input key": lambda t: messages(user("Hi"), call({t: 1}), result("ok")),
    "tool_result content string": lambda t: messages(user("Hi"), call({}), result(f"found {t}")),
    "tool_result content blocks": lambda t: messages(user("Hi"), call({}), result([text(f"found {t}")])),
    "tool_result marked as an error": lambda t: messages(user("Hi"), call({}), user([
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": t, "is_error": True}])),
    "tool description": lambda t: messages(tools=[tool(description=f"Mail results to {t}.")]),
    "tool input_schema description": lambda t: messages(tools=[tool(input_schema={
        "type": "object", "properties": {"q": {"type": "string", "description": t}}})]),
    "tool input_schema enum": lambda t: messages(tools=[tool(input_schema={
        "type": "object", "properties": {"q": {"enum": ["a", t]}}})]),
    "tool input_schema property name": lambda t: messages(tools=[tool(input_schema={
        "type": "object", "properties": {t: {"type": "string"}}})]),
    "tool_choice name": lambda t: messages(tools=[tool()], tool_choice={"type": "tool", "name": t}),
    "thinking block": lambda t: messages(user("Hi"), {"role": "assistant", "content": [
        {"type": "thinking", "thinking": f"the user is {t}", "signature": "sig"}, text("Hello")]}, user("Go")),
    "redacted_thinking block": lambda t: messages(user("Hi"), {"role": "assistant", "content": [
        {"type": "redacted_thinking", "data": t}, text("Hello")]}, user("Go")),
    "search_result block": lambda t: messages(user([{"type": "search_result", "source": "https://kb.example",
                                                     "title": "kb", "content": [text(t)]}])),
    "metadata.user_id": lambda t: messages(metadata={"user_id": t}),
    "stop_sequences": lambda t: messages(stop_sequences=["END", t]),
    "an unknown top-level field": lambda t: messages(vendor_extension={"notes": [t]}),
    "an unknown block field": lambda t: messages(user([{**text("hello"), "vendor": {"x": t}}])),
    "an unknown message field": lambda t: messages({**user("hello"), "name": t}),
    "mcp_servers": lambda t: messages(mcp_servers=[{"type": "url", "url": "https://mcp.example", "name": t}]),
    "after 840 KB of filler": lambda t: messages(user("filler " * 120_000 + t)),
    "in a body too big to walk": lambda t: messages(user(f"note {t}"), vendor_extension=[0] * 60_000),
}
UNREADABLE = {  # a document of any source counts as a file, unreadable (classify.unreadable)
    "document with a text source": lambda t: messages(user([{"type": "document", "source": {
        "type": "text", "media_type": "text/plain", "data": f"Contract for {t}"}}])),
    "document title and context": lambda t: messages(user([{"type": "document", "title": t, "context": t, "source": {
        "type": "text", "media_type": "text/plain", "data": "clean"}}])),
    "image url source, the data in its query string": lambda t: messages(user([{"type": "image", "source": {
        "type": "url", "url": f"https://img.example/cat.png?owner={t}"}}, text("What is this?")])),
    "image base64 source": lambda t: messages(user([text(t), {"type": "image", "source": {
        "type": "base64", "media_type": "image/png", "data": PNG}}])),
    "document base64 source": lambda t: messages(user([text(t), {"type": "document", "source": {
        "type": "base64", "media_type": "application/pdf", "data": "JVBERi0xLjQK"}}])),
    "document url source": lambda t: messages(user([{"type": "document", "source": {
        "type": "url", "url": f"https://docs.example/a.pdf?who={t}"}}])),
    "image inside a tool_result": lambda t: messages(user("Hi"), call({}), result([text(t), {
        "type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}])),
}
ANTHROPIC_ONLY = {"search_result block"}  # refused (400) for an upstream reached by translation
POSITIONS = {**{name: Position(build, translatable=name not in ANTHROPIC_ONLY) for name, build in READABLE.items()},
             **{name: Position(build, unreadable=True) for name, build in UNREADABLE.items()}}
ROUTES = ["mixed", "translated-first"]  # a third party that speaks Messages first, or one reached by translation


@dataclass
class Rig:
    """The gateway, its upstreams by name, and a client."""

    served: Served
    upstreams: dict[str, Any]
    client: anthropic.Anthropic


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    loop = Loop()
    apps: dict[str, Any] = {"thirdparty": MessagesStandIn("thirdparty", key=UPSTREAM_KEY),
                            "chatparty": StandIn("chatparty"), "selfhost": MessagesStandIn("selfhost")}
    urls = {name: loop.serve(app).url for name, app in apps.items()}
    specs = {
        "thirdparty": {"kind": "anthropic", "base_url": urls["thirdparty"] + "/v1", "model": "claude-model",
                       "api_key": UPSTREAM_KEY, "region": "us", "hosting": "third_party",
                       "cost": {"input_per_mtok": 3.0, "output_per_mtok": 15.0},
                       "capabilities": ["tools", "json", "vision"]},
        "chatparty": upstream_spec(urls["chatparty"], "chat-model", hosting="third_party",
                                   capabilities=["tools", "json", "vision"]),
        "selfhost": upstream_spec(urls["selfhost"], "self-model", capabilities=["tools", "json", "vision", "messages"]),
    }
    routes = {"mixed": {"candidates": ["thirdparty", "selfhost"]},
              "translated-first": {"candidates": ["chatparty", "selfhost"]}}
    path = write_policy(tmp_path_factory.mktemp("residency-messages"), specs, routes, data_classes=CLASSES,
                        classify=DETECT)
    served = loop.serve(Gateway(Settings(policy=str(path))))
    client = anthropic.Anthropic(base_url=served.url, api_key=KEY, max_retries=0)
    yield Rig(served, apps, client)
    client.close()
    loop.close()


def served_by(rig: Rig, route: str, position: Position, hit: str) -> Any:
    """The answer's headers for hit in position on route; asserts it reached the upstream that answered, and only."""
    seen = {name: len(app.seen) for name, app in rig.upstreams.items()}
    body = {**position.build(hit), "model": route}
    extra = {k: v for k, v in body.items() if k not in ("model", "max_tokens", "messages")}
    try:
        response = rig.client.messages.with_raw_response.create(model=route, max_tokens=body["max_tokens"],
                                                                 messages=body["messages"], extra_body=extra)
    except anthropic.APIStatusError as exc:
        raise AssertionError(f"{exc.status_code}: {exc.body}") from exc
    upstream = response.headers["x-switchyard-upstream"]
    assert {name: len(app.seen) for name, app in rig.upstreams.items()} == {
        name: count + (name == upstream) for name, count in seen.items()}
    if upstream != "chatparty":  # a Messages upstream gets the request as it came, the position included
        forwarded = rig.upstreams[upstream].seen[-1].body
        assert {k: v for k, v in forwarded.items() if k != "model"} == {k: v for k, v in body.items() if k != "model"}
    return response.headers


@pytest.mark.parametrize(("name", "route"), [(name, route) for name, position in POSITIONS.items()
                                             for route in ROUTES if position.translatable or route == "mixed"])
def test_a_clean_request_goes_to_the_third_party_unless_it_holds_unreadable_content(rig: Rig, name: str,
                                                                                     route: str) -> None:
    """The control: without personal data the route's first candidate serves, so the cases below can fail."""
    position = POSITIONS[name]
    headers = served_by(rig, route, position, "the weather in Paris")
    first = "thirdparty" if route == "mixed" else "chatparty"
    expected = ("selfhost", "personal") if position.unreadable else (first, "public")
    assert (headers["x-switchyard-upstream"], headers["x-switchyard-data-class"]) == expected


@pytest.mark.parametrize("hit", [*HITS.values(), *EVASIONS.values()], ids=[*HITS, *EVASIONS])
@pytest.mark.parametrize("name", POSITIONS)
def test_personal_data_in_any_messages_field_stays_self_hosted(rig: Rig, name: str, hit: str) -> None:
    headers = served_by(rig, "mixed", POSITIONS[name], hit)
    assert (headers["x-switchyard-upstream"], headers["x-switchyard-data-class"]) == ("selfhost", "personal")


@pytest.mark.parametrize("name", POSITIONS)
def test_personal_data_skips_a_translated_third_party_too(rig: Rig, name: str) -> None:
    headers = served_by(rig, "translated-first", POSITIONS[name], HITS["email"])
    assert (headers["x-switchyard-upstream"], headers["x-switchyard-data-class"]) == ("selfhost", "personal")


def counted_by(rig: Rig, route: str, position: Position, hit: str,
               headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """The count for hit in position on route, and its headers; asserts that only the upstream that counted saw it."""
    seen = {name: len(app.seen) for name, app in rig.upstreams.items()}
    body = {k: v for k, v in position.build(hit).items() if k != "max_tokens"}
    body["model"] = route
    extra = {k: v for k, v in body.items() if k not in ("model", "messages")}
    try:
        raw = rig.client.messages.with_raw_response.count_tokens(model=route, messages=body["messages"],
                                                                 extra_body=extra, extra_headers=headers)
    except anthropic.APIStatusError as exc:
        raise AssertionError(f"{exc.status_code}: {exc.body}") from exc
    upstream = raw.headers.get("x-switchyard-upstream")
    assert {name: len(app.seen) for name, app in rig.upstreams.items()} == {
        name: count + (name == upstream) for name, count in seen.items()}
    tokens = raw.parse().input_tokens
    if upstream is None:
        assert tokens == input_tokens(body)
    else:
        forwarded = rig.upstreams[upstream].seen[-1]
        assert (forwarded.path, forwarded.body) == ("/v1/messages/count_tokens", {**body, "model": "claude-model"})
        assert tokens == count_of(forwarded.body)["input_tokens"]
    return tokens, raw.headers


@pytest.mark.parametrize("name", POSITIONS)
def test_a_clean_count_is_the_third_partys_unless_it_holds_unreadable_content(rig: Rig, name: str) -> None:
    """The control: without personal data the third party counts, so the case below can fail."""
    position = POSITIONS[name]
    _, headers = counted_by(rig, "mixed", position, "the weather in Paris")
    expected = (None, "personal") if position.unreadable else ("thirdparty", "public")
    assert (headers.get("x-switchyard-upstream"), headers["x-switchyard-data-class"]) == expected


@pytest.mark.parametrize("hit", [*HITS.values(), *EVASIONS.values()], ids=[*HITS, *EVASIONS])
@pytest.mark.parametrize("name", POSITIONS)
def test_personal_data_in_a_count_never_reaches_a_third_party(rig: Rig, name: str, hit: str) -> None:
    _, headers = counted_by(rig, "mixed", POSITIONS[name], hit)
    assert (headers.get("x-switchyard-upstream"), headers["x-switchyard-data-class"]) == (None, "personal")


def test_a_count_declared_personal_never_reaches_a_third_party(rig: Rig) -> None:
    _, headers = counted_by(rig, "mixed", POSITIONS["string content"], "the weather in Paris",
                            {"x-switchyard-data-class": "personal"})
    assert (headers.get("x-switchyard-upstream"), headers["x-switchyard-data-class"]) == (None, "personal")


CARD_NUMBER = 4111111111111111


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("body", [
    messages(user("Hi"), call({"card": CARD_NUMBER}), result("ok")),
    messages(vendor_extension={"card": float(CARD_NUMBER)}),
], ids=["tool_use input", "an unknown top-level field"])
def test_a_card_number_sent_as_a_json_number_stays_self_hosted(rig: Rig, route: str, body: dict[str, Any]) -> None:
    seen = {name: len(app.seen) for name, app in rig.upstreams.items()}
    extra = {k: v for k, v in body.items() if k not in ("model", "max_tokens", "messages")}
    response = rig.client.messages.with_raw_response.create(model=route, max_tokens=body["max_tokens"],
                                                             messages=body["messages"], extra_body=extra)
    assert (response.headers["x-switchyard-upstream"], response.headers["x-switchyard-data-class"]) == (
        "selfhost", "personal")
    assert {name: len(app.seen) for name, app in rig.upstreams.items()} == {
        name: count + (name == "selfhost") for name, count in seen.items()}
