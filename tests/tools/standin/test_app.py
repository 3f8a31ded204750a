"""The OpenAI-compatible stand-in on loopback: its answers, and the faults chosen by queue, header or POST."""

from __future__ import annotations

import httpx
import openai
import orjson
import pytest

from gateway.tools.standin import Fault, StandIn
from gateway.tools.standin.app import MAX_QUEUED, parse_fault
from tests.conftest import Loop

HELLO = [{"role": "user", "content": "Hello"}]


def test_it_answers_with_its_label_and_remembers_the_request(loop: Loop) -> None:
    app = StandIn("east", chunks=3)
    client = loop.client(loop.serve(app).url + "/v1", "any")
    answer = client.chat.completions.create(model="m", messages=HELLO)
    assert answer.choices[0].message.content == "[east] word0 word1 word2 "
    assert answer.usage is not None
    assert answer.usage.completion_tokens == 4
    assert app.seen[-1].path == "/v1/chat/completions"
    assert app.seen[-1].body["messages"] == HELLO


def test_a_stream_ends_with_usage_when_asked_and_then_done(loop: Loop) -> None:
    served = loop.serve(StandIn("east", chunks=2))
    body = {"model": "m", "messages": HELLO, "stream": True, "stream_options": {"include_usage": True}}
    raw = httpx.post(served.url + "/v1/chat/completions", json=body, timeout=10).content
    events = raw.split(b"\n\n")[:-1]
    assert events[-1] == b"data: [DONE]"
    usage = orjson.loads(events[-2].removeprefix(b"data: "))
    assert (usage["choices"], usage["usage"]["completion_tokens"]) == ([], 3)
    text = "".join(orjson.loads(e[6:])["choices"][0]["delta"].get("content") or "" for e in events[:-2])
    assert text == "[east] word0 word1 "


def test_a_continuation_gets_only_what_follows_the_prefix(loop: Loop) -> None:
    client = loop.client(loop.serve(StandIn("east", chunks=3)).url + "/v1", "any")
    messages = [*HELLO, {"role": "assistant", "content": "[east] word0 "}]
    answer = client.chat.completions.create(model="m", messages=messages,  # type: ignore[arg-type]
                                            extra_body={"continue_final_message": True})
    assert answer.choices[0].message.content == "word1 word2 "


def test_a_queued_fault_is_used_once_then_it_answers_again(loop: Loop) -> None:
    app = StandIn("east")
    app.faults.append(Fault(status=429, retry_after="3", message="slow down"))
    client = loop.client(loop.serve(app).url + "/v1", "any")
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(model="m", messages=HELLO)
    assert refused.value.response.headers["retry-after"] == "3"
    assert refused.value.response.json()["error"]["message"] == "slow down"
    assert client.chat.completions.create(model="m", messages=HELLO).choices[0].message.content


def test_a_header_chooses_the_fault(loop: Loop) -> None:
    served = loop.serve(StandIn("east"))
    answer = httpx.post(served.url + "/v1/chat/completions", json={"model": "m", "messages": HELLO},
                        headers={"x-standin-status": "503"}, timeout=10)
    assert answer.status_code == 503
    assert answer.json()["error"]["message"] == "east: error 503"


def test_a_stream_cut_by_a_fault_ends_before_its_words_do(loop: Loop) -> None:
    app = StandIn("east")
    app.faults.append(Fault(cut_after=2))
    client = loop.client(loop.serve(app).url + "/v1", "any")
    got: list[str] = []
    with pytest.raises(openai.APIConnectionError):
        got.extend(c.choices[0].delta.content or "" for c in client.chat.completions.create(model="m", messages=HELLO,
                                                                                             stream=True))
    assert "".join(got) == "[east] word0 "


def test_a_posted_fault_is_queued_for_count_requests(loop: Loop) -> None:
    app = StandIn("east")
    served = loop.serve(app)
    queued = httpx.post(served.url + "/standin/faults", json={"status": 500, "count": 2}, timeout=10)
    assert queued.status_code == 200
    assert [f["status"] for f in queued.json()["data"]] == [500, 500]
    statuses = [httpx.post(served.url + "/v1/chat/completions", json={"model": "m", "messages": HELLO},
                           timeout=10).status_code for _ in range(3)]
    assert statuses == [500, 500, 200]
    assert httpx.get(served.url + "/standin/faults", timeout=10).json()["data"] == []


@pytest.mark.parametrize(("body", "says"), [
    (b"[1]", "must be a JSON object"),
    (b"{", "not valid JSON"),
    (b'{"status": 503, "count": 0}', "count must be"),
    (b'{"stauts": 503}', "unknown fault fields ['stauts']"),
    (b'{"status": 42}', "status has a bad value"),
    (b'{"delay_s": -1}', "delay_s has a bad value"),
    (b'{"cut_after": true}', "cut_after has a bad value"),
])
def test_a_bad_posted_fault_is_a_400_saying_why_and_queues_nothing(loop: Loop, body: bytes, says: str) -> None:
    app = StandIn("east")
    refused = httpx.post(loop.serve(app).url + "/standin/faults", content=body, timeout=10)
    assert refused.status_code == 400
    assert says in refused.json()["error"]["message"]
    assert not app.faults


def test_parse_fault_reads_every_field_and_bounds_the_count() -> None:
    raw = b'{"status": 503, "delay_s": 0.5, "cut_after": 1, "retry_after": "2", "message": "m", "count": 3}'
    assert parse_fault(raw) == (3, Fault(503, 0.5, 1, "2", "m"))
    assert parse_fault(b"") == (1, Fault())
    with pytest.raises(ValueError, match="count"):
        parse_fault(orjson.dumps({"count": MAX_QUEUED + 1}))


def test_embeddings_and_models_are_answered(loop: Loop) -> None:
    client = loop.client(loop.serve(StandIn("east")).url + "/v1", "any")
    embedded = client.embeddings.create(model="m", input=["a", "b"], encoding_format="float")
    assert [e.index for e in embedded.data] == [0, 1]
    assert [m.owned_by for m in client.models.list()] == ["east"]
