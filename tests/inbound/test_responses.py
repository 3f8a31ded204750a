"""POST /v1/responses: routed like chat completions; an upstream that lists capabilities must list `responses`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import openai
import orjson
import pytest
import yaml
from openai.types.responses import ResponseCreatedEvent, ResponseErrorEvent, ResponseFailedEvent

from gateway.inbound.responses import HELD_S, ID_CHARS, Holders
from gateway.serving.app import Gateway, Settings
from gateway.sse import response_failed
from gateway.tools.standin import Fault
from tests.conftest import KEY, REDIS_TIMEOUT_S, Loop, Stack, start_stack, wait_for

if TYPE_CHECKING:
    from tests.redis_server import RedisServer

pytest_plugins = ["tests.redis_server"]

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


# --- previous_response_id: a follow-up goes to the upstream that holds the response ------------------------------


def both_responses(loop: Loop, tmp_path: Path, **options: Any) -> Stack:
    """Both upstreams have the Responses API; the first answer comes from fallback (primary fails once)."""
    stack = start_stack(loop, tmp_path, **options, upstream_primary={"capabilities": RESPONSES},
                        upstream_fallback={"capabilities": RESPONSES}, resilience={
                            "backoff_ms": [1, 5], "per_try_timeout_s": 5, "deadline_s": 20, "attempts_per_upstream": 1})
    stack.upstreams["primary"].faults.append(Fault(status=503))
    return stack


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_a_follow_up_goes_to_the_upstream_that_holds_the_previous_response(loop: Loop, tmp_path: Path,
                                                                           stream: bool) -> None:
    stack = both_responses(loop, tmp_path)
    client = stack.client()
    if stream:
        events = list(client.responses.create(model="chat", input="Say hello", stream=True))
        first_id = events[0].response.id  # type: ignore[union-attr]
    else:
        first_id = client.responses.create(model="chat", input="Say hello").id
    assert len(stack.upstreams["fallback"].seen) == 1
    for _ in range(3):  # primary is healthy again and first in the route: only the pin sends these to fallback
        raw = client.responses.with_raw_response.create(model="chat", input="And then?", previous_response_id=first_id)
        assert raw.headers["x-switchyard-upstream"] == "fallback"
    assert [s.body.get("previous_response_id") for s in stack.upstreams["fallback"].seen[1:]] == [first_id] * 3
    assert client.responses.with_raw_response.create(model="chat", input="New").headers["x-switchyard-upstream"] \
        == "primary"
    unknown = client.responses.with_raw_response.create(model="chat", input="?", previous_response_id="resp_other")
    assert unknown.headers["x-switchyard-upstream"] == "primary"  # not remembered: routed as any other request


def test_a_follow_up_whose_upstream_may_no_longer_serve_it_is_a_clear_400(loop: Loop, tmp_path: Path) -> None:
    stack = both_responses(loop, tmp_path)
    client = stack.client()
    first_id = client.responses.create(model="chat", input="Say hello").id
    path = tmp_path / "policy.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["models"]["chat"]["candidates"] = ["primary"]
    path.write_text(yaml.safe_dump(doc))
    before = stack.gateway.policy.hash
    reloader = stack.gateway.reloader
    assert reloader is not None
    loop.loop.call_soon_threadsafe(reloader.request)
    wait_for(lambda: stack.gateway.policy.hash != before, what="the reload")
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="chat", input="And then?", previous_response_id=first_id)
    error = caught.value.body
    assert isinstance(error, dict)
    assert (error["code"], error["param"]) == ("previous_response_unavailable", "previous_response_id")
    assert "fallback" in error["message"]
    assert len(stack.upstreams["fallback"].seen) == 1
    assert len(stack.upstreams["primary"].seen) == 1  # the 503 only: the follow-up went nowhere


async def test_the_holders_forget_the_oldest_first() -> None:
    holders = Holders(size=2)
    for n in range(3):
        await holders.remember(f"resp_{n}", f"up{n}")
    assert [await holders.holder(f"resp_{n}") for n in range(3)] == [None, "up1", "up2"]


async def test_the_holders_forget_an_id_after_its_time_and_never_keep_a_long_one() -> None:
    now = [0.0]
    holders = Holders(ttl_s=60, clock=lambda: now[0])
    await holders.remember("resp_1", "up1")
    await holders.remember("resp_" + "x" * ID_CHARS, "up2")
    now[0] = 59.0
    assert await holders.holder("resp_1") == "up1"
    assert await holders.holder("resp_" + "x" * ID_CHARS) is None
    now[0] = 61.0
    assert await holders.holder("resp_1") is None


# --- previous_response_id across replicas: the holders shared through Redis ------------------------------------


def replicas(loop: Loop, tmp_path: Path, redis_url: str) -> tuple[openai.OpenAI, openai.OpenAI, Stack]:
    """Two gateways on one policy and one Redis, in front of the same upstreams (both_responses')."""
    stack = both_responses(loop, tmp_path, settings={"redis_url": redis_url})
    second = Gateway(Settings(policy=str(tmp_path / "policy.yaml"), redis_url=redis_url,
                              redis_timeout_s=REDIS_TIMEOUT_S))
    return stack.client(), loop.client(loop.serve(second).url + "/v1"), stack


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_a_follow_up_sent_to_another_replica_finds_the_first_replicas_response(loop: Loop, tmp_path: Path,
                                                                               redis_server: RedisServer,
                                                                               redis_url: str, stream: bool) -> None:
    first, second, stack = replicas(loop, tmp_path, redis_url)
    if stream:
        events = list(first.responses.create(model="chat", input="Say hello", stream=True))
        first_id = events[0].response.id  # type: ignore[union-attr]
    else:
        first_id = first.responses.create(model="chat", input="Say hello").id
    raw = second.responses.with_raw_response.create(model="chat", input="And then?", previous_response_id=first_id)
    assert raw.headers["x-switchyard-upstream"] == "fallback"  # primary is healthy again: only the pin sends it
    assert stack.upstreams["fallback"].seen[-1].body["previous_response_id"] == first_id
    with redis_server.client() as control:
        assert 0 < control.ttl(f"sy:resp:{first_id}") <= HELD_S


def test_with_redis_away_a_follow_up_to_the_same_replica_still_finds_its_response(loop: Loop,
                                                                                  tmp_path: Path) -> None:
    stack = both_responses(loop, tmp_path, settings={"redis_url": "redis://127.0.0.1:9"})  # nothing listens
    client = stack.client()
    first_id = client.responses.create(model="chat", input="Say hello").id
    raw = client.responses.with_raw_response.create(model="chat", input="And then?", previous_response_id=first_id)
    assert raw.headers["x-switchyard-upstream"] == "fallback"
