"""Residency against any client: personal data in any field a request can carry, written any way the detectors might
miss, is served only where its class may go.

The policy: `personal: {hosting: [self]}`, every detector on, route `[thirdparty, selfhost]` (the third party first,
so anything classified public goes there). Each case sends a detector hit, plain or disguised, in one text-bearing
position of one endpoint's request, through the real gateway over loopback with the official openai client, and
checks that the self-hosted upstream answered, that it saw the hit (the position was forwarded), and that the third
party saw nothing. Add a case here for every new field or endpoint.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest

from gateway.serving.app import Gateway, Settings
from gateway.tools.standin import StandIn
from tests.conftest import Loop, Stack, upstream_spec, write_policy

CAPABILITIES = ["tools", "json", "vision", "responses"]
DETECT = {"detectors": [{"detect": ["email", "phone", "credit_card", "iban", "national_id"], "class": "personal"}]}
CLASSES = {"public": {}, "personal": {"hosting": ["self"]}}

HITS = {
    "email": "jane.doe@example.com",
    "credit_card": "4111 1111 1111 1111",
    "iban": "DE89 3704 0044 0532 0130 00",
    "national_id": "123-45-6789",
    "phone": "+44 20 7946 0958",
}
CARD_DIGITS = ["4111", "1111", "1111", "1111"]
FULLWIDTH = {ord("0") + i: 0xff10 + i for i in range(10)}  # U+FF10 is FULLWIDTH DIGIT ZERO
ARABIC_INDIC = {ord("0") + i: 0x0660 + i for i in range(10)}  # U+0660 is ARABIC-INDIC DIGIT ZERO
EVASIONS = {
    "email, zero-width space": "jane\u200b.doe@exam\u200bple.com",
    "email, soft hyphen": "jane.doe@exam\u00adple.com",
    "email, fullwidth at": "jane.doe\uff20example.com",
    "email, Cyrillic letter in the domain": "jane.doe@ex\u0430mple.com",
    "email, mailto": "mailto:jane.doe@example.com",
    "email, percent-encoded": "jane.doe%40example.com",
    "email, mailto and percent-encoded": "mailto:jane.doe%40example%2Ecom",
    "card, zero-width space": "\u200b".join(CARD_DIGITS),
    "card, soft hyphens": "4111\u00ad1111\u00ad1111\u00ad1111",
    "card, fullwidth digits": " ".join(CARD_DIGITS).translate(FULLWIDTH),
    "card, Arabic-Indic digits": " ".join(CARD_DIGITS).translate(ARABIC_INDIC),
    "card, percent-encoded spaces": "%20".join(CARD_DIGITS),
    "iban, dashes": "DE89-3704-0044-0532-0130-00",
    "iban, lower case": "de89 3704 0044 0532 0130 00",
    "iban, irregular groups": "DE89 370400440532013000",
    "email, HTML decimal reference": "jane.doe&#64;example.com",
    "email, HTML named references": "jane.doe&commat;example&period;com",
    "email, ideographic full stop": "jane.doe@example\u3002com",
    "email, JSON-escaped at": "jane.doe\\u0040example.com",
    "card, HTML non-breaking spaces": "&nbsp;".join(CARD_DIGITS),
    "card, mixed separators": "4111-1111 1111.1111",
    "card, Amex 4-6-5": "3782 822463 10005",
    "card, fullwidth digits and ideographic spaces": "\u3000".join(CARD_DIGITS).translate(FULLWIDTH),
    "ssn, dots": "123.45.6789",
    **{f"card, separated by {name}": separator.join(CARD_DIGITS) for name, separator in [
        ("dots", "."), ("slashes", "/"), ("tabs", "\t"), ("newlines", "\n"), ("double spaces", "  "),
        ("figure spaces", "\u2007"), ("en spaces", "\u2002"), ("ideographic spaces", "\u3000"),
        ("em dashes", "\u2014"), ("minus signs", "\u2212")]},
}


@dataclass(frozen=True)
class Position:
    """A place in one endpoint's request body where text can ride."""

    endpoint: str
    build: Callable[[str], dict[str, Any]]
    unreadable: bool = False  # the position itself holds content no detector can read


def user(content: Any, **extra: Any) -> dict[str, Any]:
    return {"role": "user", "content": content, **extra}


def chat(*messages: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"model": "chat", "messages": list(messages) or [user("Hello")], **extra}


def tool(**function: Any) -> dict[str, Any]:
    """A function tool named lookup, with the given fields replacing its defaults."""
    spec = {"name": "lookup", "description": "Look a thing up.",
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}
    return {"type": "function", "function": {**spec, **function}}


def schema(properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": properties}


def assistant_call(arguments: Any) -> dict[str, Any]:
    call = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": arguments}}
    return {"role": "assistant", "content": None, "tool_calls": [call]}


def json_format(properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema(properties)}}


def image(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


CHAT = {
    "message content": lambda t: chat(user(f"Please note {t} today.")),
    "system message": lambda t: chat({"role": "system", "content": f"The customer is {t}."}, user("Hello")),
    "text part": lambda t: chat(user([{"type": "text", "text": f"note {t}"}])),
    "text part holding an object": lambda t: chat(user([{"type": "text", "text": {"value": t}}])),
    "refusal part": lambda t: chat({"role": "assistant", "content": [{"type": "refusal", "refusal": t}]},
                                   user("Why?")),
    "message name": lambda t: chat(user("Hello", name=t)),
    "tool result": lambda t: chat(user("Hi"), assistant_call("{}"), {"role": "tool", "tool_call_id": "call_1",
                                                                     "content": f"found {t}"}),
    "tool call arguments": lambda t: chat(user("Hi"), assistant_call(json.dumps({"to": t}))),
    "tool call arguments as an object": lambda t: chat(user("Hi"), assistant_call({"to": t})),
    "legacy function_call arguments": lambda t: chat(user("Hi"), {"role": "assistant", "content": None,
                                                                  "function_call": {"name": "f", "arguments": t}}),
    "user": lambda t: chat(user=t),
    "metadata value": lambda t: chat(metadata={"customer": t}),
    "metadata key": lambda t: chat(metadata={t: "yes"}),
    "tool description": lambda t: chat(tools=[tool(description=f"Mail results to {t}.")]),
    "tool name": lambda t: chat(tools=[tool(name=t)]),
    "tool parameter description": lambda t: chat(tools=[tool(parameters=schema({"q": {"type": "string",
                                                                                      "description": t}}))]),
    "tool parameter enum": lambda t: chat(tools=[tool(parameters=schema({"q": {"enum": ["a", t]}}))]),
    "tool parameter name": lambda t: chat(tools=[tool(parameters=schema({t: {"type": "string"}}))]),
    "tool parameter default": lambda t: chat(tools=[tool(parameters=schema({"q": {"default": t}}))]),
    "legacy functions": lambda t: chat(functions=[{"name": "f", "description": t, "parameters": schema({})}]),
    "prediction content": lambda t: chat(prediction={"type": "content", "content": f"Dear {t}"}),
    "prediction content parts": lambda t: chat(prediction={"type": "content",
                                                           "content": [{"type": "text", "text": t}]}),
    "response_format schema": lambda t: chat(response_format=json_format({"q": {"description": t}})),
    "response_format schema enum": lambda t: chat(response_format=json_format({"q": {"enum": [t]}})),
    "stop": lambda t: chat(stop=t),
    "stop list": lambda t: chat(stop=["END", t]),
    "an unknown field": lambda t: chat(vendor_extension={"notes": [t]}),
    "arrays of arrays in an unknown field": lambda t: chat(vendor_extension=[[[["x", [t]]]]]),
    "audio output options": lambda t: chat(modalities=["text", "audio"], audio={"voice": t, "format": "wav"}),
    "web_search_options location": lambda t: chat(web_search_options={"user_location": {
        "type": "approximate", "approximate": {"city": t}}}),
    "logit_bias key": lambda t: chat(logit_bias={t: 1}),
    "JSON held in a message, escaped": lambda t: chat(user(json.dumps({"note": json.dumps({"to": t})}))),
    "after 840 KB of filler": lambda t: chat(user("filler " * 120_000 + t)),
    "in a body too big to walk (read as its JSON text)": lambda t: chat(user(f"note {t}"),
                                                                        vendor_extension=[0] * 60_000),
    "in a body too big to walk, JSON held in a message": lambda t: chat(user(json.dumps({"to": t})),
                                                                        vendor_extension=[0] * 60_000),
}
UNREADABLE_CHAT = {
    "image URL query string": lambda t: chat(user([image(f"https://img.example/cat.png?owner={t}")])),
    "image data: URL": lambda t: chat(user([image(f"data:text/plain,{t}")])),
    "input_audio": lambda t: chat(user([{"type": "text", "text": t}, {
        "type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}])),
    "file part filename": lambda t: chat(user([{"type": "file", "file": {"filename": f"{t}.pdf",
                                                                         "file_data": "JVBERi0="}}])),
    "file part file_data": lambda t: chat(user([{"type": "file", "file": {"file_data": f"data:text/plain,{t}"}}])),
}
COMPLETIONS = {
    "prompt": lambda t: {"model": "chat", "prompt": f"Dear {t},"},
    "prompt list": lambda t: {"model": "chat", "prompt": ["Hello", f"Dear {t},"]},
    "nested prompt list": lambda t: {"model": "chat", "prompt": [["Hello", f"Dear {t},"]]},
    "suffix": lambda t: {"model": "chat", "prompt": "Dear", "suffix": f"Regards, {t}"},
    "user": lambda t: {"model": "chat", "prompt": "Hello", "user": t},
}
EMBEDDINGS = {
    "input": lambda t: {"model": "chat", "input": f"customer {t}"},
    "input list": lambda t: {"model": "chat", "input": ["a", f"customer {t}"]},
    "user": lambda t: {"model": "chat", "input": "a", "user": t},
}
RESPONSES = {
    "input": lambda t: {"model": "chat", "input": f"Note {t}"},
    "message item": lambda t: {"model": "chat", "input": [{"role": "user", "content": f"Note {t}"}]},
    "input_text part": lambda t: {"model": "chat", "input": [
        {"role": "user", "content": [{"type": "input_text", "text": t}]}]},
    "instructions": lambda t: {"model": "chat", "input": "Hi", "instructions": f"The user is {t}."},
    "function_call_output as a list": lambda t: {"model": "chat", "input": [
        {"type": "function_call_output", "call_id": "c1", "output": [{"type": "input_text", "text": t}]}]},
    "function_call arguments": lambda t: {"model": "chat", "input": [
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": json.dumps({"to": t})}]},
    "reasoning summary": lambda t: {"model": "chat", "input": [
        {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": t}]},
        {"role": "user", "content": "Go on"}]},
    "prompt variables": lambda t: {"model": "chat", "input": "Hi",
                                   "prompt": {"id": "pmpt_1", "variables": {"customer": t}}},
    "tool description": lambda t: {"model": "chat", "input": "Hi", "tools": [
        {"type": "function", "name": "f", "description": t, "parameters": schema({})}]},
    "text format schema": lambda t: {"model": "chat", "input": "Hi", "text": {"format": {
        "type": "json_schema", "name": "a", "schema": schema({"q": {"description": t}})}}},
    "metadata": lambda t: {"model": "chat", "input": "Hi", "metadata": {"customer": t}},
    "function_call_output as a string": lambda t: {"model": "chat", "input": [
        {"type": "function_call_output", "call_id": "c1", "output": f"found {t}"}]},
    "conversation": lambda t: {"model": "chat", "input": "Hi", "conversation": {"id": t}},
    "web_search tool location": lambda t: {"model": "chat", "input": "Hi", "tools": [
        {"type": "web_search", "user_location": {"type": "approximate", "city": t}}]},
    "mcp tool headers": lambda t: {"model": "chat", "input": "Hi", "tools": [
        {"type": "mcp", "server_label": "crm", "server_url": "https://mcp.example", "headers": {"X-User": t}}]},
    "file_search tool filters": lambda t: {"model": "chat", "input": "Hi", "tools": [
        {"type": "file_search", "vector_store_ids": ["vs_1"], "filters": {"type": "eq", "key": "owner", "value": t}}]},
    "previous output message": lambda t: {"model": "chat", "input": [
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": t}]},
        {"role": "user", "content": "Go on"}]},
}
UNREADABLE_RESPONSES = {
    "input_image URL": lambda t: {"model": "chat", "input": [{"role": "user", "content": [
        {"type": "input_image", "image_url": f"https://img.example/a.png?who={t}"}]}]},
    "input_file": lambda t: {"model": "chat", "input": [{"role": "user", "content": [
        {"type": "input_file", "filename": f"{t}.pdf", "file_data": "JVBERi0="}]}]},
}
POSITIONS = {
    **{f"chat: {name}": Position("chat", build) for name, build in CHAT.items()},
    **{f"chat: {name}": Position("chat", build, unreadable=True) for name, build in UNREADABLE_CHAT.items()},
    **{f"completions: {name}": Position("completions", build) for name, build in COMPLETIONS.items()},
    **{f"embeddings: {name}": Position("embeddings", build) for name, build in EMBEDDINGS.items()},
    **{f"responses: {name}": Position("responses", build) for name, build in RESPONSES.items()},
    **{f"responses: {name}": Position("responses", build, unreadable=True)
       for name, build in UNREADABLE_RESPONSES.items()},
}
PATHS = {"chat": "/chat/completions", "completions": "/completions", "embeddings": "/embeddings",
         "responses": "/responses"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One gateway for the whole module: thirdparty first in the route, selfhost the only place for personal data."""
    loop = Loop()
    apps = {name: StandIn(name) for name in ("thirdparty", "selfhost")}
    specs = {name: upstream_spec(loop.serve(app).url, model=f"{name}-model", capabilities=CAPABILITIES,
                                 hosting="self" if name == "selfhost" else "third_party")
             for name, app in apps.items()}
    path = write_policy(tmp_path_factory.mktemp("residency"), specs,
                        {"chat": {"candidates": ["thirdparty", "selfhost"]}}, data_classes=CLASSES, classify=DETECT)
    gateway = Gateway(Settings(policy=str(path)))
    yield Stack(gateway, loop.serve(gateway), apps, loop)
    loop.close()


def send(stack: Stack, endpoint: str, body: dict[str, Any]) -> Any:
    """POST body as it is to the endpoint with the openai client; the raw answer (its HTTP response), any status."""
    client = stack.client()
    try:
        return client.post(PATHS[endpoint], body=body, cast_to=httpx.Response)
    except openai.APIStatusError as exc:
        return exc.response


def served_by(stack: Stack, position: Position, text: str) -> Any:
    """The answer's headers for text in position; asserts it reached the upstream that answered, and only it."""
    seen = {name: len(app.seen) for name, app in stack.upstreams.items()}
    body = position.build(text)
    response = send(stack, position.endpoint, body)
    assert response.status_code == 200, response.text
    upstream = response.headers["x-switchyard-upstream"]
    assert {name: len(a.seen) for name, a in stack.upstreams.items()} == {
        name: count + (name == upstream) for name, count in seen.items()}
    forwarded = stack.upstreams[upstream].seen[-1].body
    assert {key: forwarded.get(key) for key in body if key != "model"} == {  # the position reached it as sent
        key: value for key, value in body.items() if key != "model"}
    return response.headers


@pytest.mark.parametrize("name", POSITIONS)
def test_a_clean_request_goes_to_the_third_party_unless_it_holds_unreadable_content(stack: Stack,
                                                                                     name: str) -> None:
    """The control: without personal data the route's first candidate serves, so the cases below can fail; an
    image, audio or file raises the request to the most sensitive class (classify.unreadable's default)."""
    position = POSITIONS[name]
    headers = served_by(stack, position, "the weather in Paris")
    expected = ("selfhost", "personal") if position.unreadable else ("thirdparty", "public")
    assert (headers["x-switchyard-upstream"], headers["x-switchyard-data-class"]) == expected


@pytest.mark.parametrize("hit", [*HITS.values(), *EVASIONS.values()], ids=[*HITS, *EVASIONS])
@pytest.mark.parametrize("name", POSITIONS)
def test_personal_data_in_any_position_stays_self_hosted(stack: Stack, name: str, hit: str) -> None:
    headers = served_by(stack, POSITIONS[name], hit)
    assert (headers["x-switchyard-upstream"], headers["x-switchyard-data-class"]) == ("selfhost", "personal")


@pytest.mark.parametrize("prompt", [[1, 2, 3], [[1, 2], [3]]])
@pytest.mark.parametrize("endpoint", ["completions", "embeddings"])
def test_token_id_prompts_are_unreadable(stack: Stack, endpoint: str, prompt: list[Any]) -> None:
    field = "prompt" if endpoint == "completions" else "input"
    response = send(stack, endpoint, {"model": "chat", field: prompt})
    assert response.status_code == 200
    assert (response.headers["x-switchyard-upstream"], response.headers["x-switchyard-data-class"]) == (
        "selfhost", "personal")


CARD_NUMBER = 4111111111111111
NUMBERS = {  # a card number as a JSON number rather than a string, in a field of no known meaning
    "chat": {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "account": CARD_NUMBER},
    "completions": {"model": "chat", "prompt": "hi", "account": {"card": CARD_NUMBER}},
    "embeddings": {"model": "chat", "input": "hi", "account": [CARD_NUMBER]},
    "responses": {"model": "chat", "input": "hi", "account": {"card": float(CARD_NUMBER)}},
}


@pytest.mark.parametrize("endpoint", NUMBERS)
def test_a_card_number_sent_as_a_json_number_stays_self_hosted(stack: Stack, endpoint: str) -> None:
    third_party_saw = len(stack.upstreams["thirdparty"].seen)
    response = send(stack, endpoint, NUMBERS[endpoint])
    assert response.status_code == 200, response.text
    assert (response.headers["x-switchyard-upstream"], response.headers["x-switchyard-data-class"]) == (
        "selfhost", "personal")
    assert len(stack.upstreams["thirdparty"].seen) == third_party_saw
