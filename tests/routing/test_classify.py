"""Request body -> features: token estimate, needs, validation of routed fields, and the data class."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from gateway.errors import InvalidRequest, PolicyError
from gateway.routing.classify import CHARS_PER_TOKEN, WALK_LIMIT, explain_class, features, request_texts
from gateway.routing.policy.decide import Features
from gateway.routing.policy.loader import load_policy
from gateway.routing.policy.model import Policy
from gateway.tools import cli
from tests.conftest import KEY, OTHER_KEY, key_hash

EMAIL = "please write to jane.doe@example.com"
IBAN = "pay to DE89 3704 0044 0532 0130 00 today"
CLASSES: dict[str, Any] = {"public": {}, "internal": {}, "personal": {"hosting": ["self"]}}


def make(tmp_path: Path, *, classes: dict[str, Any] | None = None, floor: str | None = None,
         **sections: Any) -> Policy:
    """A policy with route 'chat', tenant 'acme' (whose floor is floor) and tenant 'plain' (no floor)."""
    acme: dict[str, Any] = {"keys": [key_hash(KEY)]}
    if floor is not None:
        acme["data_class"] = floor
    doc: dict[str, Any] = {
        "version": 1,
        "upstreams": {"u": {"base_url": "http://u:8000/v1", "model": "m", "region": "eu-west", "hosting": "self",
                            "cost": {"input_per_mtok": 1.0, "output_per_mtok": 1.0}}},
        "models": {"chat": {"candidates": ["u"]}},
        "tenants": {"acme": acme, "plain": {"keys": [key_hash(OTHER_KEY)]}},
    }
    if classes is not None:
        doc["data_classes"] = classes
    doc.update(sections)
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return load_policy(path, {})


def classified(tmp_path: Path, **sections: Any) -> Policy:
    """Classes public < internal < personal; email and IBAN detectors raise to personal."""
    detectors = [{"detect": ["email", "iban"], "class": "personal"}]
    return make(tmp_path, classes=CLASSES, classify={"detectors": detectors}, **sections)


def chat(*messages: dict[str, Any], **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "chat", "messages": list(messages) or [user("hi")]}
    body.update(extra)
    return body


def user(content: Any, **extra: Any) -> dict[str, Any]:
    return {"role": "user", "content": content, **extra}


def of(policy: Policy, body: dict[str, Any], headers: dict[str, str] | None = None, endpoint: str = "chat",
       tenant: str = "acme") -> Features:
    return features(policy, tenant, endpoint, body, headers or {})


def invalid(policy: Policy, body: dict[str, Any], endpoint: str = "chat",
            headers: dict[str, str] | None = None) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        of(policy, body, headers, endpoint)
    return caught.value


# Features ---------------------------------------------------------------------------------------------------------


def test_a_plain_request_is_described(tmp_path: Path) -> None:
    found = of(make(tmp_path), chat(), {"x-a": "1"})
    assert (found.route, found.tenant, found.max_tokens, found.stream) == ("chat", "acme", None, False)
    assert (found.has_tools, found.wants_json, found.has_images, found.data_class) == (False, False, False, None)
    assert found.headers == {"x-a": "1"}
    assert found.prompt_tokens > 0


def test_the_token_estimate_grows_with_text(tmp_path: Path) -> None:
    policy = make(tmp_path)
    sizes = [of(policy, chat(user("word " * n))).prompt_tokens for n in (1, 10, 100, 1000)]
    assert sizes == sorted(sizes)
    assert len(set(sizes)) == len(sizes)
    assert sizes[-1] >= 5000 // 4
    one = of(policy, chat(user("hello there"))).prompt_tokens
    assert of(policy, chat(user("hello there"), user("hello there"))).prompt_tokens > one


@pytest.mark.parametrize(("endpoint", "field"), [("completions", "prompt"), ("embeddings", "input")])
def test_the_token_estimate_counts_prompt_and_input(tmp_path: Path, endpoint: str, field: str) -> None:
    policy = make(tmp_path)
    short = of(policy, {"model": "chat", field: "x" * 40}, endpoint=endpoint).prompt_tokens
    long = of(policy, {"model": "chat", field: "x" * 4000}, endpoint=endpoint).prompt_tokens
    listed = of(policy, {"model": "chat", field: ["x" * 4000, "x" * 4000]}, endpoint=endpoint).prompt_tokens
    assert short < long < listed


def test_images_count(tmp_path: Path) -> None:
    policy = make(tmp_path)
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    text = {"type": "text", "text": "what is this?"}
    none = of(policy, chat(user([text])))
    one = of(policy, chat(user([text, image])))
    two = of(policy, chat(user([text, image, image])))
    assert (none.has_images, one.has_images, two.has_images) == (False, True, True)
    assert none.prompt_tokens < one.prompt_tokens < two.prompt_tokens
    assert two.prompt_tokens - one.prompt_tokens >= 85   # an image costs at least a low-detail tile


@pytest.mark.parametrize(("tools", "expected"), [
    (None, False),
    ([], False),
    ([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}], True),
])
def test_tools_are_detected(tmp_path: Path, tools: list[Any] | None, expected: bool) -> None:
    body = chat() if tools is None else chat(tools=tools)
    assert of(make(tmp_path), body).has_tools is expected


@pytest.mark.parametrize(("response_format", "expected"), [
    (None, False),
    ({"type": "text"}, False),
    ({"type": "json_object"}, True),
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}, True),
])
def test_response_format_json_wants_json(tmp_path: Path, response_format: dict[str, Any] | None,
                                         expected: bool) -> None:
    body = chat() if response_format is None else chat(response_format=response_format)
    assert of(make(tmp_path), body).wants_json is expected


@pytest.mark.parametrize(("extra", "expected"), [
    ({}, None),
    ({"max_tokens": 100}, 100),
    ({"max_completion_tokens": 200}, 200),
    ({"max_completion_tokens": 200, "max_tokens": 100}, 200),
    ({"max_completion_tokens": None, "max_tokens": 100}, 100),
])
def test_max_completion_tokens_is_preferred_over_max_tokens(tmp_path: Path, extra: dict[str, Any],
                                                            expected: int | None) -> None:
    assert of(make(tmp_path), chat(**extra)).max_tokens == expected


@pytest.mark.parametrize("stream", [True, False])
def test_stream_is_read(tmp_path: Path, stream: bool) -> None:
    assert of(make(tmp_path), chat(stream=stream)).stream is stream


@pytest.mark.parametrize(("endpoint", "body", "param"), [
    ("chat", {"model": "chat"}, "messages"),
    ("chat", {"model": "chat", "messages": "hi"}, "messages"),
    ("chat", {"model": "chat", "messages": []}, "messages"),
    ("chat", {"model": "chat", "messages": [{"content": "no role"}]}, "messages[0]"),
    ("chat", {"model": "chat", "messages": ["hi"]}, "messages[0]"),
    ("chat", chat(user(5)), "messages[0].content"),
    ("chat", chat(user({"text": "hi"})), "messages[0].content"),
    ("chat", chat(user("fine"), user(["not a part"])), "messages[1].content"),
    ("chat", chat(stream="yes"), "stream"),
    ("chat", chat(stream=1), "stream"),
    ("chat", chat(max_tokens=0), "max_tokens"),
    ("chat", chat(max_tokens="10"), "max_tokens"),
    ("chat", chat(max_tokens=True), "max_tokens"),
    ("chat", chat(max_tokens=1.5), "max_tokens"),
    ("chat", chat(max_completion_tokens=-1), "max_completion_tokens"),
    ("chat", chat(tools={"type": "function"}), "tools"),
    ("chat", chat(tools="get_weather"), "tools"),
    ("completions", {"model": "chat"}, "prompt"),
    ("completions", {"model": "chat", "prompt": 5}, "prompt"),
    ("completions", {"model": "chat", "prompt": {"text": "hi"}}, "prompt"),
    ("embeddings", {"model": "chat"}, "input"),
    ("embeddings", {"model": "chat", "input": {"text": "hi"}}, "input"),
    ("embeddings", {"model": "chat", "input": None}, "input"),
    ("embeddings", {"model": "chat", "input": [{"text": "hi"}]}, "input[0]"),
    ("completions", {"model": "chat", "prompt": ["a", [1, {"x": 2}]]}, "prompt[1]"),
    ("chat", chat(text="x"), "text"),
    ("chat", chat(text={"format": "json"}), "text.format"),
    ("chat", chat(user("hi", tool_calls=5)), "messages[0].tool_calls"),
    ("chat", chat(user("hi", tool_calls=[5])), "messages[0].tool_calls"),
    ("chat", chat(user("hi", function_call="f")), "messages[0].function_call"),
    ("chat", chat(tools=[5]), "tools[0]"),
    ("chat", chat(tools=[{"type": "function"}]), "tools[0].function"),
    ("chat", chat(tools=[{"type": "function", "function": {"name": 5}}]), "tools[0].function"),
    ("chat", chat(tools=[{"type": ["function"], "function": {"name": "f"}}]), "tools[0].type"),
    ("chat", chat(tools=[{"type": "function", "function": {"name": "f", "parameters": []}}]),
     "tools[0].parameters"),
    ("chat", chat(functions={"name": "f"}), "functions"),
    ("chat", chat(response_format="json"), "response_format"),
    ("chat", chat(stream_options=[True]), "stream_options"),
    ("chat", chat(stream_options={"include_usage": "yes"}), "stream_options.include_usage"),
    ("chat", {"model": ["chat"], "messages": [user("hi")]}, "model"),
    ("responses", {"model": "chat", "input": "hi", "text": "x"}, "text"),
    ("responses", {"model": "chat", "input": [5]}, "input[0]"),
    ("responses", {"model": "chat", "input": [{"role": "user", "content": 5}]}, "input[0].content"),
    ("responses", {"model": "chat", "input": 5}, "input"),
])
def test_bad_types_name_the_param(tmp_path: Path, endpoint: str, body: dict[str, Any], param: str) -> None:
    error = invalid(make(tmp_path), body, endpoint)
    assert (error.param, error.status, error.code) == (param, 400, "invalid_request")


# Data class -------------------------------------------------------------------------------------------------------


def test_no_data_classes_means_no_data_class(tmp_path: Path) -> None:
    policy = make(tmp_path)
    assert of(policy, chat(user(EMAIL)), {"x-switchyard-data-class": "personal"}).data_class is None


def test_without_floor_header_or_hit_the_least_sensitive_class_applies(tmp_path: Path) -> None:
    assert of(classified(tmp_path), chat(user("nothing to see"))).data_class == "public"


def test_the_tenants_floor_applies(tmp_path: Path) -> None:
    policy = make(tmp_path, classes=CLASSES, floor="internal")
    assert of(policy, chat()).data_class == "internal"
    assert of(policy, chat(), tenant="plain").data_class == "public"


@pytest.mark.parametrize(("floor", "declared", "expected"), [
    (None, "internal", "internal"),
    (None, "personal", "personal"),
    ("internal", "personal", "personal"),   # raises
    ("internal", "public", "internal"),     # never lowers
    ("personal", "public", "personal"),
    ("internal", "internal", "internal"),
])
def test_the_header_raises_but_never_lowers(tmp_path: Path, floor: str | None, declared: str, expected: str) -> None:
    policy = make(tmp_path, classes=CLASSES, floor=floor)
    assert of(policy, chat(), {"x-switchyard-data-class": declared}).data_class == expected


def test_the_header_never_lowers_a_detector_hit(tmp_path: Path) -> None:
    policy = classified(tmp_path)
    assert of(policy, chat(user(EMAIL)), {"x-switchyard-data-class": "public"}).data_class == "personal"


@pytest.mark.parametrize(("classify", "header"), [
    (None, "x-switchyard-data-class"),
    ({"header": "x-class"}, "x-class"),
])
def test_an_unknown_declared_class_names_the_header(tmp_path: Path, classify: dict[str, Any] | None,
                                                    header: str) -> None:
    sections: dict[str, Any] = {} if classify is None else {"classify": classify}
    policy = make(tmp_path, classes=CLASSES, **sections)
    error = invalid(policy, chat(), headers={header: "secret"})
    assert error.param == header
    assert "secret" in error.message


def test_a_custom_header_name_is_read(tmp_path: Path) -> None:
    policy = make(tmp_path, classes=CLASSES, classify={"header": "x-class"})
    assert of(policy, chat(), {"x-class": "personal"}).data_class == "personal"
    assert of(policy, chat(), {"x-switchyard-data-class": "personal"}).data_class == "public"


def test_a_mixed_case_header_name_in_the_policy_still_reads_the_header(tmp_path: Path) -> None:
    policy = make(tmp_path, classes=CLASSES, classify={"header": "X-Data-Class"})
    assert of(policy, chat(), {"x-data-class": "personal"}).data_class == "personal"


PAY = {"name": "pay", "arguments": '{"iban": "DE89370400440532013000"}'}
TOOL_CALL = {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": PAY}]}


@pytest.mark.parametrize("messages", [
    [user(EMAIL)],
    [user(IBAN)],
    [{"role": "system", "content": "be brief"}, user("hello"), {"role": "assistant", "content": EMAIL}],
    [user([{"type": "text", "text": "hello"}, {"type": "text", "text": EMAIL}])],
    [user([{"type": "text", "text": IBAN}])],
    [user("pay the usual"), TOOL_CALL],
    [user("mail her"), {"role": "assistant", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "send", "arguments": '{"to": "jane.doe@example.com"}'}}]}],
])
def test_detectors_raise_to_their_class(tmp_path: Path, messages: list[dict[str, Any]]) -> None:
    policy = classified(tmp_path)
    assert of(policy, chat(*messages)).data_class == "personal"


@pytest.mark.parametrize(("endpoint", "body"), [
    ("completions", {"model": "chat", "prompt": EMAIL}),
    ("completions", {"model": "chat", "prompt": ["hello", IBAN]}),
    ("embeddings", {"model": "chat", "input": [EMAIL]}),
])
def test_detectors_fire_on_prompt_and_input(tmp_path: Path, endpoint: str, body: dict[str, Any]) -> None:
    assert of(classified(tmp_path), body, endpoint=endpoint).data_class == "personal"


def test_detectors_do_not_fire_on_clean_text_or_tool_names(tmp_path: Path) -> None:
    call = {"role": "assistant", "tool_calls": [{"id": "c", "type": "function",
                                                 "function": {"name": "lookup", "arguments": '{"q": "weather"}'}}]}
    body = chat(user([{"type": "text", "text": "what's the weather in Berlin?"}]), call)
    assert of(classified(tmp_path), body).data_class == "public"


def test_the_most_sensitive_detector_hit_wins(tmp_path: Path) -> None:
    detectors = [{"detect": ["email"], "class": "internal"}, {"detect": ["iban"], "class": "personal"}]
    policy = make(tmp_path, classes=CLASSES, classify={"detectors": detectors})
    assert of(policy, chat(user(EMAIL))).data_class == "internal"
    assert of(policy, chat(user(IBAN))).data_class == "personal"
    assert of(policy, chat(user(EMAIL), user(IBAN))).data_class == "personal"
    assert of(policy, chat(user(EMAIL)), {"x-switchyard-data-class": "personal"}).data_class == "personal"


def test_a_regex_detector_raises_to_its_class(tmp_path: Path) -> None:
    detectors = [{"regex": {"ticket": r"TCK-\d{4}"}, "class": "internal"}]
    policy = make(tmp_path, classes=CLASSES, classify={"detectors": detectors})
    assert of(policy, chat(user("see TCK-1234"))).data_class == "internal"
    assert of(policy, chat(user("see TCK-12"))).data_class == "public"


def test_a_malformed_tool_call_is_an_invalid_request(tmp_path: Path) -> None:
    body = chat(user("hi"), {"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": None}]})
    with pytest.raises(InvalidRequest):
        of(make(tmp_path), body)


# Every string is read (issue 11) ----------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [
    chat(user("hi", name=EMAIL)),
    chat(user=EMAIL),
    chat(metadata={"to": EMAIL}),
    chat(metadata={EMAIL: "yes"}),
    chat(some_future_field={"deep": [[{"x": EMAIL}]]}),
    chat(tools=[{"type": "function", "function": {"name": "f", "description": EMAIL}}]),
    chat(tools=[{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"to": {"enum": [EMAIL]}}}}}]),
    chat(user("hi"), {"role": "assistant", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": {"to": EMAIL}}}]}),
    chat(user([{"type": "text", "text": {"nested": EMAIL}}])),
    chat(prediction={"type": "content", "content": EMAIL}),
    chat(stop=[EMAIL]),
    {"model": "chat", "prompt": "Dear", "suffix": EMAIL},
    {"model": "chat", "prompt": [[EMAIL]]},
    {"model": "chat", "input": "hi", "prompt": {"id": "p", "variables": {"x": EMAIL}}},
])
def test_every_string_of_the_body_is_read(tmp_path: Path, body: dict[str, Any]) -> None:
    endpoint = "completions" if "prompt" in body and "input" not in body else "responses" if "input" in body else "chat"
    assert of(classified(tmp_path), body, endpoint=endpoint).data_class == "personal"


CARD_NUMBER = 4111111111111111  # a card number (Luhn-valid) as a JSON number, not a string


@pytest.mark.parametrize("body", [
    chat(card=CARD_NUMBER),
    chat(metadata={"card": CARD_NUMBER}),
    chat(some_future_field=[[CARD_NUMBER]]),
    chat(tools=[{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"card": {"type": "integer", "default": CARD_NUMBER}}}}}]),
    chat(card=float(CARD_NUMBER)),
    chat(user("hi", card=CARD_NUMBER)),
])
def test_long_numbers_are_read_as_their_digits(tmp_path: Path, body: dict[str, Any]) -> None:
    assert of(numbers(tmp_path), body).data_class == "personal"


def test_short_numbers_and_sampling_options_are_not_a_hit(tmp_path: Path) -> None:
    body = chat(max_tokens=999_999, temperature=0.7, n=2, seed=42, logprobs=True, some_count=123456)
    assert of(numbers(tmp_path), body).data_class == "public"


def numbers(tmp_path: Path) -> Policy:
    """The card detector raising to personal."""
    return make(tmp_path, classes=CLASSES, classify={"detectors": [{"detect": ["credit_card"],
                                                                     "class": "personal"}]})


def test_the_route_name_is_not_read(tmp_path: Path) -> None:
    policy = classified(tmp_path, models={"jane.doe@example.com": {"candidates": ["u"]}})
    assert of(policy, {"model": "jane.doe@example.com", "messages": [user("hi")]}).data_class == "public"


IMAGE = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}


@pytest.mark.parametrize(("endpoint", "body", "what"), [
    ("chat", chat(user([IMAGE])), "image"),
    ("chat", chat(user([{"type": "input_audio", "input_audio": {"data": "UklG", "format": "wav"}}])), "audio"),
    ("chat", chat(user([{"type": "file", "file": {"file_id": "file-1"}}])), "file"),
    ("chat", chat(user([{"image_url": {"url": "data:image/png;base64,AA=="}}])), "image"),
    ("responses", {"model": "chat", "input": [{"role": "user", "content": [
        {"type": "input_file", "file_data": "JVBE"}]}]}, "file"),
    ("completions", {"model": "chat", "prompt": [1, 2, 3]}, "token ids"),
    ("embeddings", {"model": "chat", "input": [[1, 2], [3]]}, "token ids"),
])
def test_unreadable_content_raises_to_the_most_sensitive_class_by_default(tmp_path: Path, endpoint: str,
                                                                          body: dict[str, Any], what: str) -> None:
    policy = classified(tmp_path)
    assert of(policy, body, endpoint=endpoint).data_class == "personal"
    content = request_texts(endpoint, body)
    assert explain_class(policy, "acme", {}, content) == ("personal", f"unreadable content ({what})")


def test_classify_unreadable_names_the_class(tmp_path: Path) -> None:
    detectors = [{"detect": ["email"], "class": "personal"}]
    policy = make(tmp_path, classes=CLASSES, classify={"detectors": detectors, "unreadable": "internal"})
    assert of(policy, chat(user([IMAGE]))).data_class == "internal"
    assert of(policy, chat(user([IMAGE, {"type": "text", "text": EMAIL}]))).data_class == "personal"
    assert of(policy, chat(user("hi"))).data_class == "public"


def test_classify_unreadable_must_name_a_defined_class(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as caught:
        make(tmp_path, classes=CLASSES, classify={"unreadable": "secret"})
    assert any("classify.unreadable: data class 'secret' is not defined" in p for p in caught.value.problems)


def test_the_estimate_counts_tool_definitions_schemas_and_system_prompts(tmp_path: Path) -> None:
    policy = make(tmp_path)
    plain = of(policy, chat(user("hi"))).prompt_tokens
    big = "x" * 40_000
    bodies = [
        chat(user("hi"), tools=[{"type": "function", "function": {"name": "f", "description": big}}]),
        chat(user("hi"), response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": {
            "type": "object", "properties": {big: {"type": "string"}}}}}),
        chat({"role": "system", "content": big}, user("hi")),
        chat(user("hi"), metadata={"notes": big}),
    ]
    for body in bodies:
        assert of(policy, body).prompt_tokens >= plain + 10_000
    responses = {"model": "chat", "input": "hi", "instructions": big}
    assert of(policy, responses, endpoint="responses").prompt_tokens >= 10_000


def test_token_ids_count_one_token_each(tmp_path: Path) -> None:
    policy = make(tmp_path)
    assert of(policy, {"model": "chat", "prompt": list(range(1000))}, endpoint="completions").prompt_tokens >= 1000


def test_a_body_too_big_to_walk_is_read_from_its_json(tmp_path: Path) -> None:
    """Past WALK_LIMIT values the body is read as JSON text: still every string, unreadable parts and the estimate."""
    policy = classified(tmp_path)
    many = [user([{"type": "text", "text": f"note {i}"}]) for i in range(WALK_LIMIT // 4)]
    assert of(policy, chat(*many)).data_class == "public"
    hidden = chat(*many, tools=[{"type": "function", "function": {"name": "f", "description": f"mail {EMAIL}"}}])
    assert of(policy, hidden).data_class == "personal"
    content = request_texts("chat", chat(*many, user([IMAGE])))
    assert (content.unreadable, content.images) == ("image", 1)
    assert of(policy, chat(*many)).prompt_tokens >= len(orjson.dumps(chat(*many))) // CHARS_PER_TOKEN


@pytest.mark.parametrize(("unreadable", "expected"), [
    (None, "personal, the most sensitive class (default)"),
    ("internal", "internal"),
])
def test_policy_check_says_which_class_unreadable_content_gets(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                               unreadable: str | None, expected: str) -> None:
    classify = {} if unreadable is None else {"unreadable": unreadable}
    make(tmp_path, classes=CLASSES, classify=classify)
    assert cli.main(["policy", "check", str(tmp_path / "policy.yaml")]) == 0
    assert f"classify.unreadable: images, audio, files and token ids raise a request to {expected}" in (
        capsys.readouterr().out)


def test_a_body_read_as_json_that_nests_too_deeply_is_refused_as_a_whole_dump_refuses_it() -> None:
    for depth, refused in ((250, False), (260, True)):
        nested: Any = "x"
        for level in range(depth):  # a big array near the top, which is dumped a batch at a time
            nested = [nested] if level != depth - 3 else [nested, *range(2 * WALK_LIMIT)]
        body = chat(user("hi"), deep=nested)
        with pytest.raises(orjson.JSONEncodeError) if refused else contextlib.nullcontext():
            orjson.dumps(body)
        with pytest.raises(InvalidRequest, match="too deeply") if refused else contextlib.nullcontext():
            request_texts("chat", body)
