"""Chat, completions and the Responses API through the gateway, each compared with the same request sent to vLLM.

The model is random weights: its text means nothing, so these compare structure, statuses and usage, never text.
`temperature: 0` (or a seed) makes both answers the same length; `ignore_eos` (vLLM's) makes it max_tokens.
"""

from __future__ import annotations

from typing import Any

import openai
import pytest
from openai.types import Completion
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.completion_usage import CompletionUsage
from openai.types.responses import Response

from tests.real.conftest import GENERATE
from tests.real.wire import Events, read_stream, shape

pytestmark = pytest.mark.real

HELLO = [{"role": "user", "content": "Say hello."}]
SAME = {"temperature": 0, "seed": 7, "max_tokens": 8, "extra_body": {"ignore_eos": True}}


def both(gw: openai.OpenAI, direct: openai.OpenAI, call: str, route: str = "chat", **body: Any) -> tuple[Any, Any]:
    """The raw response of the same request through the gateway (model = route) and straight to vLLM."""
    def run(client: openai.OpenAI, model: str) -> Any:
        target: Any = client
        for part in call.split("."):
            target = getattr(target, part)
        return target.with_raw_response.create(model=model, **body)

    return run(gw, route), run(direct, GENERATE)


def streams(gw: openai.OpenAI, direct: openai.OpenAI, call: str, route: str = "chat",
            **body: Any) -> tuple[Events, Events]:
    """The same streamed request through the gateway and straight to vLLM, every event kept."""
    def run(client: openai.OpenAI, model: str) -> Events:
        target: Any = client
        for part in call.split("."):
            target = getattr(target, part)
        return read_stream(target.with_streaming_response.create, model=model, **body)

    return run(gw, route), run(direct, GENERATE)


def assert_same(through: Any, straight: Any, model: type[Any]) -> tuple[Any, Any]:
    """Both 200, both valid as model, same shape and usage; the gateway's names the upstream it used."""
    assert through.status_code == straight.status_code == 200
    assert through.headers["x-switchyard-upstream"] == "vllm"
    ours, theirs = through.http_response.json(), straight.http_response.json()
    model.model_validate(ours)
    model.model_validate(theirs)
    assert shape(ours) == shape(theirs)
    assert ours["usage"] == theirs["usage"]
    return ours, theirs


def test_chat_matches_vllm(gw: openai.OpenAI, direct: openai.OpenAI) -> None:
    ours, _ = assert_same(*both(gw, direct, "chat.completions", messages=HELLO, **SAME), ChatCompletion)
    assert ours["usage"]["completion_tokens"] == 8


def test_completions_match_vllm(gw: openai.OpenAI, direct: openai.OpenAI) -> None:
    ours, _ = assert_same(*both(gw, direct, "completions", prompt="Say hello.", **SAME), Completion)
    assert ours["choices"][0]["finish_reason"] == "length"


def test_two_choices(gw: openai.OpenAI, direct: openai.OpenAI) -> None:
    body = {**SAME, "temperature": 1.0, "n": 2}  # vLLM refuses n > 1 under greedy sampling
    ours, _ = assert_same(*both(gw, direct, "chat.completions", messages=HELLO, **body), ChatCompletion)
    assert [c["index"] for c in ours["choices"]] == [0, 1]
    assert ours["usage"]["completion_tokens"] == 16


def test_chat_logprobs(gw: openai.OpenAI, direct: openai.OpenAI) -> None:
    ours, _ = assert_same(*both(gw, direct, "chat.completions", messages=HELLO, logprobs=True, top_logprobs=2,
                                **SAME), ChatCompletion)
    assert len(ours["choices"][0]["logprobs"]["content"]) == 8


def test_completions_logprobs(gw: openai.OpenAI, direct: openai.OpenAI) -> None:
    ours, _ = assert_same(*both(gw, direct, "completions", prompt="Say hello.", logprobs=2, **SAME), Completion)
    assert len(ours["choices"][0]["logprobs"]["tokens"]) == 8


def test_json_schema(gw: openai.OpenAI, direct: openai.OpenAI) -> None:
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
              "additionalProperties": False}
    response_format = {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": True}}
    body = {"temperature": 0, "seed": 7, "max_tokens": 32}
    assert_same(*both(gw, direct, "chat.completions", messages=HELLO, response_format=response_format, **body),
                ChatCompletion)


def test_responses_api(gw: openai.OpenAI, direct: openai.OpenAI) -> None:
    through, straight = both(gw, direct, "responses", input="Say hello.", max_output_tokens=8, temperature=0)
    ours, theirs = through.http_response.json(), straight.http_response.json()
    assert through.status_code == straight.status_code == 200
    Response.model_validate(ours)
    assert shape(ours) == shape(theirs)
    assert ours["usage"] == theirs["usage"]


def test_responses_api_streamed(gw: openai.OpenAI, direct: openai.OpenAI) -> None:
    ours, theirs = streams(gw, direct, "responses", input="Say hello.", max_output_tokens=8, temperature=0)
    assert ours.status == theirs.status == 200
    assert runs([p["type"] for p in ours.payloads]) == runs([p["type"] for p in theirs.payloads])
    assert ours.payloads[-1]["type"] in ("response.completed", "response.incomplete")
    assert ours.payloads[-1]["response"]["usage"] == theirs.payloads[-1]["response"]["usage"]
    assert shape(ours.payloads[-1]) == shape(theirs.payloads[-1])


def runs(items: list[Any]) -> list[Any]:
    """items with each run of equal neighbours kept once: vLLM merges tokens into fewer events when it lags."""
    return [item for i, item in enumerate(items) if i == 0 or item != items[i - 1]]


def assert_same_stream(ours: Events, theirs: Events, chunk: type[Any] | None) -> None:
    """Every event valid (when the SDK has a type for it), the same keys event by event, [DONE], the same usage."""
    assert ours.status == theirs.status == 200
    assert ours.headers["content-type"].startswith("text/event-stream")
    assert ours.done
    assert theirs.done
    assert not ours.errors
    for payload in ours.payloads if chunk is not None else ():
        chunk.model_validate(payload)
    assert runs([shape(p) for p in ours.payloads]) == runs([shape(p) for p in theirs.payloads])
    assert ours.usage == theirs.usage


OPTIONS = [None, {"include_usage": True}, {"include_usage": False}]


# Every case but include_usage: true needs the stream fingerprint fix of issue 14 (point 2): the gateway asks vLLM
# for usage and strips the usage event, and vLLM puts system_fingerprint on that event instead of the finishing one.
@pytest.mark.parametrize("options", OPTIONS, ids=["no-options", "usage", "no-usage"])
def test_chat_stream_matches_vllm(gw: openai.OpenAI, direct: openai.OpenAI, options: dict[str, bool] | None) -> None:
    body = {**SAME, **({"stream_options": options} if options is not None else {})}
    ours, theirs = streams(gw, direct, "chat.completions", messages=HELLO, **body)
    assert_same_stream(ours, theirs, ChatCompletionChunk)
    if options and options["include_usage"]:
        assert CompletionUsage.model_validate(ours.usage).completion_tokens == 8
    else:
        assert ours.usage is None


# Like the chat stream above, every case but include_usage: true needs the stream fingerprint fix.
@pytest.mark.parametrize("options", OPTIONS, ids=["no-options", "usage", "no-usage"])
def test_completions_stream_matches_vllm(gw: openai.OpenAI, direct: openai.OpenAI,
                                         options: dict[str, bool] | None) -> None:
    body = {**SAME, **({"stream_options": options} if options is not None else {})}
    ours, theirs = streams(gw, direct, "completions", prompt="Say hello.", **body)
    assert_same_stream(ours, theirs, None)  # the SDK types a completions chunk as Completion, which needs a finish


def test_two_choices_streamed(gw: openai.OpenAI, direct: openai.OpenAI) -> None:
    body = {**SAME, "temperature": 1.0, "n": 2}
    ours, theirs = streams(gw, direct, "chat.completions", messages=HELLO, stream_options={"include_usage": True},
                           **body)
    assert ours.status == theirs.status == 200
    assert ours.done
    for payload in ours.payloads:
        ChatCompletionChunk.model_validate(payload)
    indexes = {c["index"] for p in ours.payloads for c in p["choices"]}
    assert indexes == {0, 1}
    assert sorted(set(ours.keys())) == sorted(set(theirs.keys()))
    assert ours.usage == theirs.usage
    assert ours.usage is not None
    assert ours.usage["completion_tokens"] == 16
