"""Real llama.cpp wire samples (tests/fixtures/llamacpp, recorded by scripts/real/record_llamacpp.py) through the
gateway's code.

llama-server is too slow to build for every CI run, so its shapes reach the fast suite only through these:
every stream through the SSE relay in any chunking, the usage event the gateway strips with its `timings`
carried onto the finish event, two requests' streams stamped as one completion, and every error body
through the error reading.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from openai.types import Completion, CreateEmbeddingResponse
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from gateway.delivery.chunks import carried, carry, identity_of, restamp
from gateway.delivery.dispatch import counts_against_circuit
from gateway.delivery.relay import SseRelay, Transcript
from gateway.errors import UpstreamStatus
from gateway.upstreams.error_kinds import kind_of as error_kind

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "llamacpp"
META = json.loads((FIXTURES / "index.json").read_text())
INDEX = META["files"]
STREAMS = sorted(name for name in INDEX if name.endswith(".sse"))
CHAT_STREAMS = [name for name in STREAMS if name.startswith("chat-")]
COMPLETION_STREAMS = [name for name in STREAMS if name.startswith("completions-")]
ERRORS = sorted(name for name in INDEX if name.startswith("error-"))
CHUNKINGS = [1, 7, 64, 1 << 20]


def raw(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def payloads(data: bytes) -> list[dict[str, Any]]:
    """Every JSON data payload of a stream."""
    return [orjson.loads(line[6:]) for event in data.split(b"\n\n") for line in event.split(b"\n")
            if line.startswith(b"data: {")]


def relay(name: str, size: int, strip_usage: bool, transcript: Transcript | None = None) -> tuple[SseRelay, bytes]:
    """The stream fed to a relay in pieces of size bytes; the relay and everything it let through."""
    data = raw(name)
    sse = SseRelay(strip_usage, transcript)
    out = b"".join(sse.feed(data[i:i + size]) for i in range(0, len(data), size))
    return sse, out


def test_the_fixtures_are_real_recordings() -> None:
    assert META["server"] == "llama.cpp"
    assert META["version"] == "b1-0c1e570"  # the build of the sources vendored in llama-cpp-python 0.3.36
    assert STREAMS
    assert ERRORS
    for name, entry in INDEX.items():
        assert (FIXTURES / name).stat().st_size > 0, name
        assert (entry["status"] >= 400) == name.startswith("error-"), name
        assert entry["content_type"] == ("text/event-stream" if name.endswith(".sse") else
                                         "application/json; charset=utf-8"), name


@pytest.mark.parametrize("size", CHUNKINGS)
@pytest.mark.parametrize("name", STREAMS)
def test_a_real_stream_passes_through_unchanged(name: str, size: int) -> None:
    """Asked for usage or not, the client gets llama.cpp's bytes exactly, however they were cut."""
    sse, out = relay(name, size, strip_usage=False)
    assert out == raw(name)
    assert sse.dropped == 0
    assert sse.leftover == b""
    assert sse.done
    assert sse.finished
    reported = [p["usage"] for p in payloads(raw(name)) if p.get("usage")]
    assert sse.usage == (reported[-1] if reported else None)


@pytest.mark.parametrize("name", CHAT_STREAMS)
def test_every_real_chunk_is_one_completion_the_sdk_accepts(name: str) -> None:
    """Within one request llama.cpp keeps one id, created and model, and a system_fingerprint on every chunk."""
    chunks = [ChatCompletionChunk.model_validate(p) for p in payloads(raw(name))]
    assert len({(c.id, c.created, c.model) for c in chunks}) == 1
    assert {c.system_fingerprint for c in chunks} == {META["version"]}
    assert chunks[0].model == "tiny"


def test_timings_ride_on_the_last_event() -> None:
    """Without include_usage llama.cpp puts its timings on the finish event; with it, on the usage event."""
    plain, usage = payloads(raw("chat-stream.sse")), payloads(raw("chat-stream-usage.sse"))
    assert [("timings" in p) for p in plain] == [False] * (len(plain) - 1) + [True]
    assert plain[-1]["choices"][0]["finish_reason"] == "length"
    assert [("timings" in p) for p in usage] == [False] * (len(usage) - 1) + [True]
    assert usage[-1]["choices"] == []
    assert usage[-1]["usage"]["completion_tokens"] == 6


@pytest.mark.parametrize("name", [n for n in CHAT_STREAMS if n.endswith("-usage.sse")])
def test_a_stripped_usage_event_gives_its_timings_to_the_finish_event(name: str) -> None:
    """The gateway asks for usage on every stream; a client that did not ask gets the stream llama.cpp sends
    without it: no usage event, and its timings (and fingerprint) on the event that finishes."""
    sse, out = relay(name, 64, strip_usage=True)
    assert sse.stripped is not None
    assert sse.usage is not None
    assert sse.usage["completion_tokens"] == 6
    extra = carried(sse.stripped)
    assert set(extra) == {"system_fingerprint", "timings"}
    ours = payloads(carry(out, extra))
    theirs = [p for p in payloads(raw(name)) if p["choices"]]
    assert len(ours) == len(theirs)
    assert ours[-1]["timings"] == sse.stripped["timings"]
    assert [set(p) for p in ours] == [set(p) for p in payloads(raw("chat-stream.sse"))]
    assert out.endswith(b"data: [DONE]\n\n")


def test_two_real_requests_stamped_as_one_completion() -> None:
    """llama.cpp gives each request its own id (and created, the second it began): a continued stream's second
    part is stamped with the first part's identity, so the client reads one completion."""
    first, second = raw("chat-stream.sse"), raw("chat-stream-usage.sse")
    identity = identity_of(first)
    assert identity["id"] != identity_of(second)["id"]
    assert identity["system_fingerprint"] == META["version"]
    chunks = [ChatCompletionChunk.model_validate(p) for p in payloads(first + restamp(second, identity))]
    assert {(c.id, c.created, c.model) for c in chunks} == {(identity["id"], identity["created"], "tiny")}


@pytest.mark.parametrize("name", ["chat-stream.sse", "chat-stream-usage.sse", "chat-stream-logprobs-usage.sse"])
def test_a_real_chat_stream_is_transcribed_exactly(name: str) -> None:
    """What a continuation would resend is exactly the text llama.cpp streamed."""
    transcript = Transcript()
    _, out = relay(name, 7, strip_usage=False, transcript=transcript)
    contents = [c["delta"].get("content") for p in payloads(raw(name)) for c in p["choices"]]
    assert transcript.text == "".join(c for c in contents if c)
    assert transcript.continuable
    assert out == raw(name)


@pytest.mark.parametrize("name", COMPLETION_STREAMS)
def test_a_real_completions_stream_carries_its_usage_on_the_finish_event(name: str) -> None:
    """On /v1/completions llama.cpp sends usage and timings on the finish event, asked or not: there is no
    usage event to strip, so a client that did not ask gets the stream as it came, and the usage is read."""
    sse, out = relay(name, 7, strip_usage=True)
    assert out == raw(name)
    assert sse.stripped is None
    assert sse.usage is not None
    assert sse.usage["completion_tokens"] == 6
    chunks = payloads(raw(name))  # (the SDK's Completion type takes no null finish_reason: not validated)
    assert [("usage" in c, "timings" in c) for c in chunks] == [(False, False)] * (len(chunks) - 1) + [(True, True)]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert {c["object"] for c in chunks} == {"text_completion"}


def test_real_whole_answers_are_the_sdks_types() -> None:
    chat = ChatCompletion.model_validate(orjson.loads(raw("chat.json")))
    assert chat.usage is not None
    assert chat.usage.completion_tokens == 6
    assert chat.system_fingerprint == META["version"]
    completion = Completion.model_validate(orjson.loads(raw("completions.json")))
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 6
    embeddings = CreateEmbeddingResponse.model_validate(orjson.loads(raw("embeddings.json")))
    assert [e.index for e in embeddings.data] == [0, 1]
    assert {len(e.embedding) for e in embeddings.data} == {128}  # the test model's hidden size


def test_max_tokens_over_the_window_is_not_refused() -> None:
    """Unlike vLLM, llama.cpp does not refuse max_tokens over its window: it stops where the window ends."""
    answer = orjson.loads(raw("chat-max-tokens-over-window.json"))
    assert INDEX["chat-max-tokens-over-window.json"]["request"]["max_tokens"] == 600
    assert INDEX["chat-max-tokens-over-window.json"]["status"] == 200
    assert answer["choices"][0]["finish_reason"] == "length"
    assert answer["usage"]["prompt_tokens"] + answer["usage"]["completion_tokens"] == 512


@pytest.mark.parametrize("name", ERRORS)
def test_real_error_bodies_are_openai_like(name: str) -> None:
    """{"error": {"code": <the status>, "message", "type"}}: no param, and the status again as the code."""
    body = orjson.loads(raw(name))
    assert set(body) == {"error"}
    assert {"code", "message", "type"} <= set(body["error"])
    assert "param" not in body["error"]
    assert body["error"]["code"] == INDEX[name]["status"]


def test_a_prompt_over_the_window_says_its_size_in_fields_of_its_own() -> None:
    """Streamed or not, a plain JSON 400 before any event."""
    for name in ("error-prompt-too-long.json", "error-prompt-too-long-stream.json"):
        error = orjson.loads(raw(name))["error"]
        assert error["type"] == "exceed_context_size_error"
        assert error["n_ctx"] == 512
        assert error["n_prompt_tokens"] > 512
    assert INDEX["error-prompt-too-long-stream.json"]["request"]["stream"] is True


def failed(name: str) -> UpstreamStatus:
    """The error the gateway makes of a recorded answer: its status, its body and the kind read from it."""
    status = INDEX[name]["status"]
    error = UpstreamStatus("llamacpp", status, raw(name), b"application/json")
    error.kind = error_kind(status, raw(name))
    return error


def test_the_unsupported_endpoint_is_a_501_that_is_not_the_upstreams_fault() -> None:
    """Embeddings on a server started without --embeddings: not asked again, not counted against the circuit."""
    error = failed("error-embeddings-unsupported.json")
    assert error.status == 501
    assert orjson.loads(error.body)["error"]["type"] == "not_supported_error"
    assert "--embeddings" in orjson.loads(error.body)["error"]["message"]
    assert error.kind is None
    assert not error.retryable
    assert not counts_against_circuit(error)


def test_the_500_for_an_input_over_the_batch_is_the_clients_not_an_outage() -> None:
    """Embeddings of 1800 tokens on a server whose batch is 512: a 500 that says the input was too large."""
    error = failed("error-embeddings-too-large.json")
    assert error.status == 500
    assert error.kind == "context_length"
    assert not counts_against_circuit(error)
