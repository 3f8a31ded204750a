"""A client that leaves a stream before its usage event still pays for what was generated.

The attack: streams read to their last content event and closed before the usage event were billed the prompt
estimate alone (0 completion tokens), so a tenant could stream past its budget for the price of its prompts.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from gateway.tools.standin import FaultServer, Sse, chat_events, event
from tests.conftest import KEY, OTHER_KEY, Loop, key_hash, wait_for
from tests.guarantees.rig import AUTH, HELLO, Faults, Rig, rig, spend_row

ADMIN_KEY = "sy-admin-billing-key-0123456789abcdef"
STREAMS = 10
ONE_TOKEN_EACH = [f"primary{i} " for i in range(8)]
MERGED = ["several tokens that a lagging vLLM merged ", "into one event, as it does ", "under load."]


@pytest.fixture
def faults(loop: Loop) -> Iterator[Faults]:
    made = Faults(loop)
    yield made
    made.stop()


def estimate(texts: list[str]) -> int:
    """The documented estimate of a cut stream's completion: a token per 4 bytes of each text, at least one."""
    return sum(-(-len(text.encode()) // 4) for text in texts)


def budgeted(loop: Loop, tmp_path: Path, faults: Faults, events: tuple[bytes, ...],
             stall_after: int) -> tuple[Rig, FaultServer]:
    """A tenant with a budget, and an upstream that sends stall_after events and then nothing (no usage)."""
    server = faults("primary", default=Sse(events, stall_after=stall_after))
    tenants = {"acme": {"keys": [key_hash(KEY)], "budget": {"usd_per_day": 1.0}},
               "limited": {"keys": [key_hash(OTHER_KEY)]}}
    return rig(loop, tmp_path, {"primary": server}, tenants=tenants, admin_key=ADMIN_KEY,
               capabilities=("responses",)), server


def leave_after_the_last_content(client: openai.OpenAI, words: list[str]) -> str:
    """Read a stream up to its last content event, then close it: the usage event never reaches the client."""
    stream = client.chat.completions.create(model="chat", messages=HELLO, stream=True, max_tokens=200)
    got: list[str] = []
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            got.append(chunk.choices[0].delta.content)
        if len(got) == len(words):
            break
    stream.close()
    return "".join(got)


@pytest.mark.parametrize("words", [ONE_TOKEN_EACH, MERGED], ids=["a-token-per-event", "merged-tokens-per-event"])
def test_streams_left_before_the_usage_event_bill_the_text_they_relayed(loop: Loop, tmp_path: Path, faults: Faults,
                                                                        words: list[str]) -> None:
    r, server = budgeted(loop, tmp_path, faults, chat_events("primary-model", words), 1 + len(words))
    client = loop.client(r.base_url)
    for _ in range(STREAMS):
        assert leave_after_the_last_content(client, words) == "".join(words)
    assert_billed(r, server, words)


def assert_billed(r: Rig, server: FaultServer, words: list[str]) -> None:
    """Every stream's completion billed from its text: in the metrics, the spend and its cost."""
    wait_for(lambda: server.count == STREAMS and all(a.closed for a in server.arrivals),
             what="every upstream request closed after its client left")
    row = spend_row(r, STREAMS, ADMIN_KEY)
    completion = r.metric("switchyard_tokens_total", type="completion", upstream="primary")
    prompt = r.metric("switchyard_tokens_total", type="prompt", upstream="primary")
    assert prompt is not None
    assert completion == STREAMS * estimate(words)
    assert completion >= STREAMS * len(words)  # never less than one token per event
    assert row["upstreams"]["primary"]["tokens"] == prompt + completion
    assert row["spend_usd"] == pytest.approx((prompt * 1.0 + completion * 2.0) / 1e6, abs=1e-9)
    assert row["spend_usd"] > prompt * 1.0 / 1e6  # more than the prompt estimate alone


def completion_events(words: list[str]) -> tuple[bytes, ...]:
    return tuple(event({"id": "cmpl-1", "object": "text_completion", "created": 0, "model": "primary-model",
                        "choices": [{"index": 0, "text": word, "finish_reason": None, "logprobs": None}]})
                 for word in words)


def responses_events(words: list[str]) -> tuple[bytes, ...]:
    def typed(kind: str, **data: object) -> bytes:
        return b"event: " + kind.encode() + b"\n" + event({"type": kind, **data})

    created = typed("response.created", response={"id": "resp_1", "object": "response", "status": "in_progress"})
    return (created, *(typed("response.output_text.delta", item_id="msg_1", output_index=0, content_index=0,
                             delta=word) for word in words))


ENDPOINTS = {
    "completions": ("/completions", {"prompt": "Hello there"}, completion_events, 0),
    "responses": ("/responses", {"input": "Hello there"}, responses_events, 1),
}


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_every_streaming_endpoint_bills_a_stream_left_before_its_usage(loop: Loop, tmp_path: Path, faults: Faults,
                                                                       endpoint: str) -> None:
    path, body, events, opening = ENDPOINTS[endpoint]
    r, server = budgeted(loop, tmp_path, faults, events(MERGED), opening + len(MERGED))
    for _ in range(STREAMS):
        with httpx.stream("POST", r.base_url + path, headers=AUTH, timeout=10,
                          json={"model": "chat", "stream": True, **body}) as response:
            raw = b""
            for part in response.iter_raw():
                raw += part
                if MERGED[-1].encode() in raw:
                    break  # the last text arrived: leave before the usage
    assert_billed(r, server, MERGED)


ARGUMENT_PIECES = ['{"customer_name": "', "Jane Doe of the", " accounts team", '", "limit": 100}']


def delta_events(delta_of: Any, pieces: list[str]) -> tuple[bytes, ...]:
    role = event({"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "primary-model",
                  "choices": [{"index": 0, "delta": {"role": "assistant", "content": None}, "finish_reason": None}]})
    return (role, *(event({"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "primary-model",
                           "choices": [{"index": 0, "delta": delta_of(i, piece), "finish_reason": None}]})
                    for i, piece in enumerate(pieces)))


DELTAS = {
    "tool call arguments": lambda i, piece: {"tool_calls": [{"index": 0, "function": {"arguments": piece}, **(
        {"id": "call_1", "type": "function"} if i == 0 else {})}]},
    "reasoning_content": lambda i, piece: {"reasoning_content": piece},
}


@pytest.mark.parametrize("kind", list(DELTAS))
def test_a_stream_of_other_deltas_left_before_its_usage_bills_them(loop: Loop, tmp_path: Path, faults: Faults,
                                                                  kind: str) -> None:
    """Text generated as tool-call arguments or reasoning costs as much as content: a client leaving before the usage
    event must not get it for the price of the prompt."""
    r, server = budgeted(loop, tmp_path, faults, delta_events(DELTAS[kind], ARGUMENT_PIECES),
                         1 + len(ARGUMENT_PIECES))
    for _ in range(STREAMS):
        with httpx.stream("POST", r.base_url + "/chat/completions", headers=AUTH, timeout=10,
                          json={"model": "chat", "stream": True, "messages": HELLO, "max_tokens": 200}) as response:
            raw = b""
            for part in response.iter_raw():
                raw += part
                if b"limit" in raw:
                    break
    wait_for(lambda: server.count == STREAMS and all(a.closed for a in server.arrivals),
             what="every upstream request closed after its client left")
    spend_row(r, STREAMS, ADMIN_KEY)
    completion = r.metric("switchyard_tokens_total", type="completion", upstream="primary")
    assert completion is not None
    assert completion >= STREAMS * len(ARGUMENT_PIECES)
