"""POST /v1/responses: routed like chat completions, only to upstreams that declare the `responses` capability."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import orjson
import pytest
from openai.types.responses import ResponseCreatedEvent, ResponseErrorEvent, ResponseFailedEvent

from gateway.errors import response_failed
from gateway.standin import Fault
from tests.conftest import KEY, Loop, Stack, start_stack

RESPONSES = ["tools", "json", "vision", "responses"]


def responses_stack(loop: Loop, tmp_path: Path, **extra: object) -> Stack:
    """primary lacks the Responses API, fallback has it."""
    return start_stack(loop, tmp_path, upstream_fallback={"capabilities": RESPONSES}, **extra)


def test_a_response_comes_from_an_upstream_that_declares_the_api(loop: Loop, tmp_path: Path) -> None:
    stack = responses_stack(loop, tmp_path)
    raw = stack.client().responses.with_raw_response.create(model="chat", input="Say hello")
    response = raw.parse()
    assert response.output_text.startswith("[fallback]")
    assert raw.headers["x-switchyard-upstream"] == "fallback"
    assert float(raw.headers["x-switchyard-cost-usd"]) == pytest.approx((10 * 1.0 + 9 * 2.0) / 1e6)
    assert stack.upstreams["primary"].seen == []
    assert stack.upstreams["fallback"].seen[0].path == "/v1/responses"
    assert stack.upstreams["fallback"].seen[0].body["model"] == "fallback-model"


def test_a_streamed_response_arrives_whole_with_its_usage(loop: Loop, tmp_path: Path) -> None:
    stack = responses_stack(loop, tmp_path)
    events = list(stack.client().responses.create(model="chat", input="Say hello", stream=True))
    assert events[0].type == "response.created"
    assert events[-1].type == "response.completed"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text.startswith("[fallback]")
    assert "stream_options" not in stack.upstreams["fallback"].seen[0].body
    metrics = httpx.get(stack.served.url + "/metrics").text
    assert 'switchyard_tokens_total{tenant="acme",type="completion",upstream="fallback"} 9.0' in metrics


def test_no_upstream_with_the_api_is_a_capability_error(stack: Stack) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        stack.client().responses.create(model="chat", input="hi")
    assert caught.value.response.json()["error"]["code"] == "capability_unavailable"


@pytest.mark.parametrize(("body", "param"), [
    ({"model": "chat"}, "input"),
    ({"model": "chat", "input": 5}, "input"),
    ({"model": "chat", "input": ["x"]}, "input[0]"),
    ({"model": "chat", "input": [{"role": "user", "content": 7}]}, "input[0].content"),
])
def test_bad_input_is_400_naming_the_param(loop: Loop, tmp_path: Path, body: dict[str, object], param: str) -> None:
    stack = responses_stack(loop, tmp_path)
    response = httpx.post(stack.base_url + "/responses", json=body, headers={"authorization": f"Bearer {KEY}"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


def test_personal_data_in_response_items_is_classified(loop: Loop, tmp_path: Path) -> None:
    stack = responses_stack(loop, tmp_path, data_classes={"public": {}, "personal": {"hosting": ["self"]}},
                            classify={"detectors": [{"detect": ["email"], "class": "personal"}]})
    items = [{"role": "user", "content": [{"type": "input_text", "text": "Mail jane.doe@example.com"}]}]
    raw = stack.client().responses.with_raw_response.create(model="chat", input=items)  # type: ignore[arg-type]
    assert raw.headers["x-switchyard-data-class"] == "personal"


def test_a_responses_stream_cut_mid_way_ends_in_response_failed_in_that_api_s_shape(loop: Loop,
                                                                                    tmp_path: Path) -> None:
    stack = responses_stack(loop, tmp_path)
    stack.upstreams["fallback"].faults.append(Fault(cut_after=3))
    events = list(stack.client().responses.create(model="chat", input="Say hello", stream=True))
    created, failed = events[0], events[-1]
    assert isinstance(created, ResponseCreatedEvent)
    assert isinstance(failed, ResponseFailedEvent)
    assert sum(1 for e in events if e.type == "response.output_text.delta") == 3
    assert failed.response.status == "failed"
    assert failed.response.id == created.response.id
    assert failed.response.model == created.response.model
    assert failed.response.error is not None
    assert failed.response.error.code == "server_error"
    assert "incomplete" in failed.response.error.message
    assert failed.sequence_number == 0  # the stand-in numbers no event: the first number there is
    assert not any(e.type == "response.completed" for e in events)


def test_a_failure_event_carries_the_next_sequence_number_and_errors_without_a_response() -> None:
    first = b'event: response.created\ndata: {"type":"response.created","sequence_number":0,"response":{"id":"r1"}}\n\n'
    last = b'data: {"type":"response.output_text.delta","sequence_number":6}\n\ndata: {"sequence_number":7}\n\n'
    event = orjson.loads(response_failed(first, last, "cut").split(b"data: ", 1)[1])
    assert event == {"type": "response.failed", "sequence_number": 8, "response": {
        "id": "r1", "status": "failed", "error": {"code": "server_error", "message": "cut"}}}
    bare = response_failed(b"", b"", "cut")
    assert bare.startswith(b"event: error\n")
    assert ResponseErrorEvent.model_validate(orjson.loads(bare.split(b"data: ", 1)[1])).message == "cut"
