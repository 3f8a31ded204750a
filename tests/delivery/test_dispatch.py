"""Resilience against upstreams that misbehave on purpose (FaultServer), driven as a user would drive the gateway.

Every test asserts from the upstream's side how many attempts came (and, where it matters, how far apart) and what
the client got. Times are scaled down through the policy's `resilience` settings.
"""

from __future__ import annotations

import asyncio
import email.utils
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionMessageParam

from gateway.serving.app import Gateway, Settings
from gateway.tools.standin import (
    Behaviour,
    Echo,
    FaultServer,
    Hang,
    Json,
    Redirect,
    Reset,
    SilentClose,
    Sse,
    Status,
    chat_events,
    chunk,
)
from tests.conftest import KEY, OTHER_KEY, RESILIENCE, Loop, Served, key_hash, upstream_spec, wait_for, write_policy

HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hello there"}]
AUTH = {"authorization": f"Bearer {KEY}"}
BASE = dict(RESILIENCE)  # generous timeouts; a test about one sets its own
SLACK_S = 1.0  # what a loaded 2-core machine may add to a bound computed from the settings
Make = Callable[..., FaultServer]



def words(label: str, count: int = 8) -> list[str]:
    return [f"{label}{i} " for i in range(count)]


def answer(label: str, **options: Any) -> Sse:
    """A whole, well-behaved stream of eight words from label."""
    return Sse(chat_events(f"{label}-model", words(label)), **options)


@pytest.fixture
def faults(loop: Loop) -> Iterator[Make]:
    """Fault servers on the test's loop, every one stopped (and its sockets closed) before the loop closes."""
    made: list[FaultServer] = []

    def make(label: str, *script: Behaviour, default: Behaviour | None = None) -> FaultServer:
        server = FaultServer(label, script, default)
        loop.run(server.start())
        made.append(server)
        return server

    yield make
    for server in made:
        loop.run(server.stop())


@dataclass
class Rig:
    """A gateway in front of fault servers."""

    served: Served
    loop: Loop
    _client: openai.OpenAI | None = None

    @property
    def base_url(self) -> str:
        return self.served.url + "/v1"

    def client(self) -> openai.OpenAI:
        """One openai client per rig (closed with the loop); it is thread-safe."""
        if self._client is None:
            self._client = self.loop.client(self.base_url, KEY)
        return self._client

    def chat(self, **extra: Any) -> tuple[Mapping[str, str], ChatCompletion]:
        """A non-streamed chat completion through the openai client: its headers and the parsed completion."""
        raw = self.client().chat.completions.with_raw_response.create(model="chat", messages=HELLO, **extra)
        return raw.headers, raw.parse()

    def served_by(self) -> str:
        return self.chat()[0]["x-switchyard-upstream"]

    def metric(self, name: str, **labels: str) -> float | None:
        """One sample from /metrics whose labels are exactly labels, or None."""
        for line in httpx.get(self.served.url + "/metrics").text.splitlines():
            key, _, value = line.rpartition(" ")
            metric_name, _, label_text = key.partition("{")
            if not line.startswith("#") and metric_name == name and dict(
                    re.findall(r'(\w+)="([^"]*)"', label_text)) == labels:
                return float(value)
        return None


def rig(loop: Loop, tmp_path: Path, servers: dict[str, FaultServer], resilience: dict[str, Any] | None = None,
        specs: dict[str, dict[str, Any]] | None = None, **sections: Any) -> Rig:
    """A route 'chat' over servers in order, with BASE resilience updated by resilience."""
    upstreams = {name: upstream_spec(server.url, model=f"{name}-model", **(specs or {}).get(name, {}))
                 for name, server in servers.items()}
    models = sections.pop("models", {"chat": {"candidates": list(servers)}})
    path = write_policy(tmp_path, upstreams, models, resilience={**BASE, **(resilience or {})}, **sections)
    gateway = Gateway(Settings(policy=str(path), reload_interval_s=0))
    return Rig(loop.serve(gateway), loop)


def pair(loop: Loop, tmp_path: Path, faults: Make, primary: Behaviour | list[Behaviour], fallback: Behaviour,
         **options: Any) -> tuple[Rig, FaultServer, FaultServer]:
    """primary (a default behaviour, or a script before well-behaved answers) and fallback."""
    script = primary if isinstance(primary, list) else []
    default = None if isinstance(primary, list) else primary
    first = faults("primary", *script, default=default)
    second = faults("fallback", default=fallback)
    return rig(loop, tmp_path, {"primary": first, "fallback": second}, **options), first, second


@dataclass
class Streamed:
    """A raw SSE response as the client received it."""

    headers: httpx.Headers
    raw: bytes
    seconds: float

    @property
    def events(self) -> list[dict[str, Any]]:
        return [orjson.loads(e[6:]) for e in self.raw.split(b"\n\n") if e.startswith(b"data: {")]

    @property
    def text(self) -> str:
        return "".join(e["choices"][0]["delta"].get("content") or "" for e in self.events if e.get("choices"))

    @property
    def complete(self) -> bool:
        return self.raw.endswith(b"data: [DONE]\n\n") and self.raw.count(b"[DONE]") == 1

    @property
    def finish_reasons(self) -> list[str]:
        return [e["choices"][0]["finish_reason"] for e in self.events
                if e.get("choices") and e["choices"][0].get("finish_reason")]


def stream(rig: Rig, **extra: Any) -> Streamed:
    started = time.monotonic()
    with httpx.stream("POST", rig.base_url + "/chat/completions", headers=AUTH, timeout=30,
                      json={"model": "chat", "messages": HELLO, "stream": True, **extra}) as response:
        assert response.status_code == 200, response.read()
        raw = response.read()
    return Streamed(response.headers, raw, time.monotonic() - started)


def waiting(rig: Rig) -> socket.socket:
    """A plain request sent on a raw socket, left waiting for its answer; closing the socket is the client leaving."""
    body = orjson.dumps({"model": "chat", "messages": HELLO})
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {KEY}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n")
    sock = socket.create_connection(("127.0.0.1", rig.served.port))
    sock.sendall(head.encode() + body)
    return sock


def assert_interrupted(got: Streamed) -> None:
    """One in-band error event at the end, no [DONE], no made-up finish_reason."""
    assert b"[DONE]" not in got.raw
    assert got.events[-1]["error"]["code"] == "stream_interrupted"
    assert sum(1 for e in got.events if "error" in e) == 1
    assert got.finish_reasons == []


# Retries on the same upstream, and moving on


@pytest.mark.parametrize("retry_after", ["1", "http-date"])
def test_429_with_retry_after_is_retried_on_the_same_upstream_after_the_pause(loop: Loop, tmp_path: Path,
                                                                               faults: Make, retry_after: str) -> None:
    now = time.time()
    target = int(now) + (2 if now % 1 < 0.5 else 3)  # whole seconds: 1.5 to 2 s from now
    value = "1" if retry_after == "1" else email.utils.formatdate(target, usegmt=True)
    r, primary, fallback = pair(loop, tmp_path, faults, [Status(429, retry_after=value)], Json())
    headers, completion = r.chat()
    assert headers["x-switchyard-upstream"] == "primary"
    assert completion.choices[0].message.content == "primary answers"
    assert (primary.count, fallback.count) == (2, 0)
    assert 0.95 <= primary.gaps()[0] <= 2 + SLACK_S  # Retry-After: 1, or 1.5 to 2 s by the date
    assert r.metric("switchyard_retries_total", upstream="primary", reason="http_429") == 1


def test_a_retry_after_past_the_deadline_moves_to_the_next_candidate_at_once(loop: Loop, tmp_path: Path,
                                                                              faults: Make) -> None:
    r, primary, fallback = pair(loop, tmp_path, faults, [Status(429, retry_after="60")], Json(),
                                resilience={"deadline_s": 10})
    assert r.served_by() == "fallback"
    assert (primary.count, fallback.count) == (1, 1)
    assert fallback.arrivals[0].at - primary.arrivals[0].at < SLACK_S


RETRIED = [  # (fault, how many times in a row, attempts the primary sees, who serves), attempts_per_upstream 3
    pytest.param(Status(429), 3, 3, "fallback", id="429-persistent"),
    pytest.param(Status(500), 1, 2, "primary", id="500-once"),
    pytest.param(Status(502), 1, 2, "primary", id="502-once"),
    pytest.param(Status(503), 3, 3, "fallback", id="503-persistent"),
    pytest.param(Status(504), 1, 2, "primary", id="504-once"),
    pytest.param(Status(408), 1, 2, "primary", id="408-once"),
    pytest.param(Reset(), 1, 2, "primary", id="reset-before-headers"),
    pytest.param(Reset(), 3, 3, "fallback", id="reset-persistent"),
    pytest.param(SilentClose(0), 1, 2, "primary", id="closed-at-once"),
    pytest.param(Status(401), 1, 1, "fallback", id="401-next-candidate"),
]
STREAMED = {"429-persistent", "500-once", "reset-before-headers", "401-next-candidate"}


@pytest.mark.parametrize(("fault", "times", "on_primary", "served", "streamed"), [
    *(pytest.param(*p.values, False, id=f"plain-{p.id}") for p in RETRIED),
    *(pytest.param(*p.values, True, id=f"stream-{p.id}") for p in RETRIED if p.id in STREAMED),
])
def test_retryable_failures_are_retried_on_the_same_upstream_with_backoff(
        loop: Loop, tmp_path: Path, faults: Make, fault: Behaviour, times: int, on_primary: int, served: str,
        streamed: bool) -> None:
    good: Behaviour = answer("primary") if streamed else Json()
    primary = faults("primary", *[fault] * times, default=good)
    fallback = faults("fallback", default=answer("fallback") if streamed else Json())
    r = rig(loop, tmp_path, {"primary": primary, "fallback": fallback},
            resilience={"attempts_per_upstream": 3, "backoff_ms": [20, 80]})
    if streamed:
        got = stream(r)
        assert got.complete
        assert got.text == "".join(words(served))
        upstream = got.headers["x-switchyard-upstream"]
    else:
        upstream = r.served_by()
    assert upstream == served
    assert (primary.count, fallback.count) == (on_primary, int(served == "fallback"))
    for attempt, gap in enumerate(primary.gaps()):  # equal jitter: at least half of min(80, 20 * 2^n) ms
        assert min(0.08, 0.02 * 2**attempt) / 2 - 0.002 <= gap < SLACK_S


@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "stream"])
def test_a_503_primary_leaves_model_and_usage_to_the_fallback(loop: Loop, tmp_path: Path, faults: Make,
                                                             streamed: bool) -> None:
    fallback_answer: Behaviour = Json(prompt_tokens=11, completion_tokens=5)
    if streamed:
        fallback_answer = Sse(chat_events("fallback-model", words("fallback", 5)))
    r, primary, fallback = pair(loop, tmp_path, faults, Status(503), fallback_answer)
    if streamed:
        chunks = list(r.client().chat.completions.create(model="chat", messages=HELLO, stream=True,
                                                         stream_options={"include_usage": True}))
        assert {c.model for c in chunks} == {"fallback-model"}
        usage = chunks[-1].usage
        assert usage is not None
        assert (usage.prompt_tokens, usage.completion_tokens) == (7, 5)
    else:
        headers, completion = r.chat()
        assert headers["x-switchyard-upstream"] == "fallback"
        assert completion.model == "fallback-model"
        assert completion.usage is not None
        assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (11, 5)
        assert float(headers["x-switchyard-cost-usd"]) == pytest.approx((11 * 1.0 + 5 * 2.0) / 1e6)
    assert (primary.count, fallback.count) == (2, 1)
    assert r.metric("switchyard_fallbacks_total", route="chat", from_upstream="primary", to_upstream="fallback",
                    reason="http_503") == 1
    assert r.metric("switchyard_tokens_total", tenant="acme", upstream="primary", type="completion") is None


# Timeouts and silence: not asked again


@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "stream"])
def test_a_socket_that_never_answers_is_tried_once_then_the_fallback_serves(loop: Loop, tmp_path: Path,
                                                                            faults: Make, streamed: bool) -> None:
    r, primary, fallback = pair(loop, tmp_path, faults, Hang(), answer("fallback") if streamed else Json(),
                                resilience={"per_try_timeout_s": 0.5, "attempts_per_upstream": 3})
    if streamed:
        got = stream(r)
        assert got.complete
        assert got.headers["x-switchyard-upstream"] == "fallback"
    else:
        assert r.served_by() == "fallback"
    assert (primary.count, fallback.count) == (1, 1)
    assert 0.45 <= fallback.arrivals[0].at - primary.arrivals[0].at < 0.5 + SLACK_S  # the timer starts at connect
    wait_for(lambda: primary.arrivals[0].closed, what="the gateway to close the silent connection")
    assert r.metric("switchyard_upstream_errors_total", upstream="primary", reason="timeout") == 1


@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "stream"])
def test_silence_then_close_after_a_second_is_not_retried(loop: Loop, tmp_path: Path, faults: Make,
                                                          streamed: bool) -> None:
    r, primary, fallback = pair(loop, tmp_path, faults, SilentClose(1.1), answer("fallback") if streamed else Json(),
                                resilience={"attempts_per_upstream": 3})
    if streamed:
        assert stream(r).headers["x-switchyard-upstream"] == "fallback"
    else:
        assert r.served_by() == "fallback"
    assert (primary.count, fallback.count) == (1, 1)
    assert fallback.arrivals[0].at - primary.arrivals[0].at >= 1.1
    assert r.metric("switchyard_upstream_errors_total", upstream="primary", reason="silent_close") == 1


def test_a_first_token_later_than_ttft_moves_on_and_nothing_of_the_slow_one_reaches_the_client(
        loop: Loop, tmp_path: Path, faults: Make) -> None:
    r, primary, fallback = pair(loop, tmp_path, faults, answer("primary", delays=(3.0,)), answer("fallback"),
                                resilience={"ttft_timeout_s": 0.4, "attempts_per_upstream": 3})
    with r.client().chat.completions.with_streaming_response.create(model="chat", messages=HELLO,
                                                                   stream=True) as response:
        upstream = response.headers["x-switchyard-upstream"]
        chunks = list(response.parse())
    assert upstream == "fallback"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "".join(words("fallback"))
    assert {c.model for c in chunks} == {"fallback-model"}
    assert (primary.count, fallback.count) == (1, 1)
    assert 0.4 <= fallback.arrivals[0].at - primary.arrivals[0].at < 0.4 + SLACK_S
    wait_for(lambda: primary.arrivals[0].closed, what="the slow stream to be closed")


@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "stream"])
def test_every_candidate_slow_gives_a_504_within_the_deadline(loop: Loop, tmp_path: Path, faults: Make,
                                                              streamed: bool) -> None:
    deadline = 1.2
    r, primary, fallback = pair(loop, tmp_path, faults, Hang(), Hang(),
                                resilience={"per_try_timeout_s": 0.7, "deadline_s": deadline})
    started = time.monotonic()
    with pytest.raises(openai.InternalServerError) as caught:
        r.client().chat.completions.create(model="chat", messages=HELLO, stream=streamed)
    elapsed = time.monotonic() - started
    assert caught.value.status_code == 504
    assert caught.value.response.json()["error"]["code"] == "upstream_timeout"
    assert elapsed < deadline + SLACK_S
    assert (primary.count, fallback.count) == (1, 1)
    wait_for(lambda: primary.arrivals[0].closed and fallback.arrivals[0].closed, what="both connections closed")


def test_a_stream_whose_first_token_never_comes_still_ends_within_the_deadline(loop: Loop, tmp_path: Path,
                                                                               faults: Make) -> None:
    deadline = 0.8
    r, primary, _ = pair(loop, tmp_path, faults, answer("primary", delays=(30.0,)), Hang(),
                         resilience={"per_try_timeout_s": 0.4, "ttft_timeout_s": 2.5, "deadline_s": deadline})
    started = time.monotonic()
    with pytest.raises(openai.InternalServerError) as caught:
        r.client().chat.completions.create(model="chat", messages=HELLO, stream=True)
    assert caught.value.status_code == 504
    assert primary.count == 1
    assert time.monotonic() - started < deadline + SLACK_S


# Streams that break after bytes went out


@pytest.mark.parametrize("reset", [False, True], ids=["fin", "rst"])
def test_a_stream_cut_half_way_ends_in_an_error_event_not_a_done(loop: Loop, tmp_path: Path, faults: Make,
                                                                 reset: bool) -> None:
    r, primary, fallback = pair(loop, tmp_path, faults, answer("primary", cut_after=5, reset=reset),
                                answer("fallback"))
    got = stream(r)
    assert got.text == "".join(words("primary")[:4])
    assert_interrupted(got)
    assert (primary.count, fallback.count) == (1, 0)
    assert r.metric("switchyard_stream_failures_total", upstream="primary", reason="cut",
                    outcome="error_event") == 1


def test_the_openai_client_sees_a_cut_stream_as_an_error(loop: Loop, tmp_path: Path, faults: Make) -> None:
    r, primary, _ = pair(loop, tmp_path, faults, answer("primary", cut_after=5), answer("fallback"))
    received: list[str] = []

    def read_all() -> None:
        for c in r.client().chat.completions.create(model="chat", messages=HELLO, stream=True):
            received.append(c.choices[0].delta.content or "")

    with pytest.raises(openai.APIError, match="incomplete"):
        read_all()
    assert "".join(received) == "".join(words("primary")[:4])
    assert primary.count == 1


def test_a_cut_stream_is_continued_by_an_upstream_that_declares_continuation(loop: Loop, tmp_path: Path,
                                                                            faults: Make) -> None:
    whole = words("primary")
    rest = Sse(chat_events("primary-model", whole[4:]))
    r, primary, fallback = pair(loop, tmp_path, faults, [answer("primary", cut_after=5), rest], answer("fallback"),
                                specs={"primary": {"capabilities": ["continuation"]}})
    got = stream(r, stream_options={"include_usage": True})
    assert got.text == "".join(whole)
    assert got.complete
    assert got.finish_reasons == ["stop"]
    assert sum(1 for e in got.events if e.get("choices") and e["choices"][0]["delta"].get("role")) == 1
    # the cut part estimated from its text (a token per 4 bytes of "primaryN ": 3 each), the rest as reported
    assert got.events[-1]["usage"]["completion_tokens"] == 4 * 3 + 4
    assert (primary.count, fallback.count) == (2, 0)
    asked = primary.arrivals[1].body
    assert (asked["continue_final_message"], asked["add_generation_prompt"]) == (True, False)
    assert asked["messages"] == [*HELLO, {"role": "assistant", "content": "".join(whole[:4])}]


@pytest.mark.parametrize("rejection", [
    pytest.param(Status(400, "continue_final_message is not supported"), id="400"),
    pytest.param(Status(503), id="503"),
    pytest.param(Reset(), id="reset"),
    pytest.param(Hang(), id="hang"),
])
def test_a_cut_stream_whose_fallback_rejects_the_continuation_ends_in_an_error_event(
        loop: Loop, tmp_path: Path, faults: Make, rejection: Behaviour) -> None:
    r, primary, fallback = pair(loop, tmp_path, faults, answer("primary", cut_after=5), rejection,
                                specs={"fallback": {"capabilities": ["continuation"]}},
                                resilience={"per_try_timeout_s": 0.5, "attempts_per_upstream": 3})
    got = stream(r)
    assert got.text == "".join(words("primary")[:4])
    assert_interrupted(got)
    assert got.seconds < 0.5 + SLACK_S
    assert (primary.count, fallback.count) == (1, 1)  # the primary does not declare continuation; no retries
    assert fallback.arrivals[0].body["continue_final_message"] is True
    assert r.metric("switchyard_stream_failures_total", upstream="primary", reason="cut",
                    outcome="error_event") == 1


@pytest.mark.parametrize("continuation", [False, True], ids=["error-event", "continued"])
def test_a_stream_stalled_past_the_idle_timeout_never_hangs(loop: Loop, tmp_path: Path, faults: Make,
                                                            continuation: bool) -> None:
    whole = words("primary")
    stalled = answer("primary", stall_after=5)
    r, primary, _ = pair(loop, tmp_path, faults, [stalled, Sse(chat_events("primary-model", whole[4:]))],
                         answer("fallback"), resilience={"stream_idle_timeout_s": 0.4},
                         specs={"primary": {"capabilities": ["continuation"] if continuation else []}})
    got = stream(r)
    assert got.seconds < 0.4 + SLACK_S
    wait_for(lambda: primary.arrivals[0].closed, what="the stalled connection to be closed")
    if continuation:
        assert got.text == "".join(whole)
        assert got.complete
        assert primary.count == 2
        assert primary.gaps()[0] >= 0.4
    else:
        assert got.text == "".join(whole[:4])
        assert_interrupted(got)
        assert primary.count == 1
    outcome = "continued" if continuation else "error_event"
    assert r.metric("switchyard_stream_failures_total", upstream="primary", reason="timeout", outcome=outcome) == 1


MALFORMED = [b"data: this is not json\n\n", b'data: {"choices": [{"delta": \n\n', b"bogus: field\n\n"]


@pytest.mark.parametrize(("bad", "mode"), [
    pytest.param(MALFORMED, "relay", id="relay"),  # one event per read: the relay's fast path
    pytest.param(MALFORMED, "relay-one-read", id="relay-one-read"),  # many events per read: sifted
    pytest.param(MALFORMED, "transcript", id="transcript"),  # continuation declared: every event read
    pytest.param([b"data: {not json}\n\n"], "relay", id="braces-not-json"),
])
def test_malformed_events_mid_stream_are_dropped_and_the_rest_arrives(loop: Loop, tmp_path: Path, faults: Make,
                                                                      bad: list[bytes], mode: str) -> None:
    events = list(chat_events("primary-model", words("primary")))
    for position, garbage in zip((2, 5, 8), bad, strict=False):
        events.insert(position, garbage)
    spaced = (0.01,) * len(events) if mode == "relay" else ()  # apart, so that each event is a read of its own
    upstream = Sse(tuple(events), delays=spaced, together=mode == "relay-one-read")
    r, primary, _ = pair(loop, tmp_path, faults, upstream, answer("fallback"),
                         specs={"primary": {"capabilities": ["continuation"] if mode == "transcript" else []}})
    got = stream(r)
    assert all(garbage.strip() not in got.raw for garbage in bad)
    assert got.text == "".join(words("primary"))
    assert got.complete
    chunks = list(r.client().chat.completions.create(model="chat", messages=HELLO, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "".join(words("primary"))
    assert primary.count == 2




def finishing(with_usage: bool, reads: str, **options: Any) -> Sse:
    """Eight words with finish_reason and no [DONE]: in one read, or with finish_reason in a later read."""
    events = chat_events("primary-model", words("primary"), with_usage=with_usage)
    if reads == "one-read":
        return Sse(events, done=False, together=True, **options)
    return Sse(events, done=False, delays=(0,) * 9 + (0.05,), **options)


@pytest.mark.parametrize(("ending", "reads"), [
    ("close", "later-read"), ("cut", "later-read"), ("reset", "later-read"), ("close", "one-read"),
    pytest.param("cut", "one-read"),
])
def test_a_stream_with_finish_reason_but_no_done_is_finalised_promptly(loop: Loop, tmp_path: Path, faults: Make,
                                                                        ending: str, reads: str) -> None:
    cut = len(chat_events("primary-model", words("primary"))) if ending != "close" else None
    upstream = finishing(True, reads, cut_after=cut, reset=ending == "reset")
    r, primary, _ = pair(loop, tmp_path, faults, upstream, answer("fallback"), resilience={"stream_idle_timeout_s": 10})
    got = stream(r)
    assert got.complete
    assert got.text == "".join(words("primary"))
    assert got.finish_reasons == ["stop"]
    assert got.seconds < 0.9  # the stream ended: no waiting out the one-second grace
    assert primary.count == 1


@pytest.mark.parametrize(("with_usage", "reads"), [
    (True, "later-read"),
    pytest.param(True, "one-read"),
])
def test_a_stream_that_stays_open_after_finish_reason_gets_done_within_a_second(
        loop: Loop, tmp_path: Path, faults: Make, with_usage: bool, reads: str) -> None:
    idle = 2.1
    events = chat_events("primary-model", words("primary"), with_usage=with_usage)
    upstream = finishing(with_usage, reads, stall_after=len(events))
    r, primary, _ = pair(loop, tmp_path, faults, upstream, answer("fallback"),
                         resilience={"stream_idle_timeout_s": idle})
    got = stream(r, stream_options={"include_usage": True})
    assert got.complete
    assert got.text == "".join(words("primary"))
    assert got.seconds < 1.0 + SLACK_S < idle
    assert (got.events[-1].get("usage") is not None) == with_usage
    wait_for(lambda: primary.arrivals[0].closed, what="the gateway to close the lingering stream")
    assert primary.count == 1


# Client errors: context length moves to a larger window, anything else goes back as it came

CONTEXT_ERRORS = [
    pytest.param({"error": {"message": "This model's maximum context length is 4096 tokens. However, your messages "
                            "resulted in 5000 tokens. Please reduce the length of the messages.",
                            "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}},
                 id="openai"),
    pytest.param({"object": "error", "message": "This model's maximum context length is 4096 tokens. However, you "
                  "requested 5000 tokens (4488 in the messages, 512 in the completion). Please reduce the length of "
                  "the messages or completion.", "type": "BadRequestError", "param": None, "code": 400}, id="vllm"),
    pytest.param({"object": "error", "message": "'max_tokens' or 'max_completion_tokens' is too large: 512. This "
                  "model's maximum context length is 4096 tokens and your request has 3800 input tokens "
                  "(512 > 4096 - 3800).", "type": "BadRequestError", "param": None, "code": 400}, id="vllm-new"),
    pytest.param({"object": "error", "message": "Requested token count exceeds the model's maximum context length of "
                  "4096 tokens. You requested a total of 5000 tokens: 4488 tokens from the input messages and 512 "
                  "tokens for the completion. Please reduce the number of tokens in the input messages or the "
                  "completion to fit within the limit.", "type": "BadRequestError", "param": None, "code": 400},
                 id="sglang"),
    pytest.param({"object": "error", "message": "The input (5000 tokens) is longer than the model's context length "
                  "(4096 tokens).", "type": "BadRequestError", "param": None, "code": 400}, id="sglang-input"),
    pytest.param({"error": {"code": 400, "message": "the request exceeds the available context size, try increasing "
                            "it", "type": "exceed_context_size_error", "n_prompt_tokens": 5000, "n_ctx": 4096}},
                 id="llama.cpp"),
    pytest.param({"error": {"message": "the input length exceeds the context length", "type": "api_error",
                            "param": None, "code": None}}, id="ollama"),
    pytest.param({"object": "error", "message": "The decoder prompt (length 5000) is longer than the maximum model "
                  "length of 4096. Make sure that `max_model_len` is no smaller than the number of text tokens.",
                  "type": "BadRequestError", "param": None, "code": 400}, id="vllm-v1-processor"),
    pytest.param({"object": "error", "message": "Input length (5000 tokens) exceeds the maximum allowed length "
                  "(4096 tokens). Use a shorter input or enable --allow-auto-truncate.", "type": "BadRequestError",
                  "param": None, "code": 400}, id="sglang-scheduler"),
]


def windows(loop: Loop, tmp_path: Path, faults: Make, rejection: dict[str, Any],
            order: tuple[str, ...]) -> tuple[Rig, dict[str, FaultServer]]:
    servers = {"primary": faults("primary", Status(400, body=rejection)), "small": faults("small"),
               "big": faults("big")}
    chosen = {name: servers[name] for name in order}
    specs = {"primary": {"context_window": 4096}, "small": {"context_window": 2048},
             "big": {"context_window": 32768}}
    return rig(loop, tmp_path, chosen, specs=specs, resilience={"attempts_per_upstream": 3}), servers


@pytest.mark.parametrize("rejection", CONTEXT_ERRORS)
def test_context_length_moves_to_a_larger_window_and_skips_smaller_ones(loop: Loop, tmp_path: Path, faults: Make,
                                                                       rejection: dict[str, Any]) -> None:
    r, servers = windows(loop, tmp_path, faults, rejection, ("primary", "small", "big"))
    headers, completion = r.chat()
    assert headers["x-switchyard-upstream"] == "big"
    assert completion.model == "big-model"
    assert {name: s.count for name, s in servers.items()} == {"primary": 1, "small": 0, "big": 1}


def test_context_length_without_a_larger_window_returns_the_upstreams_400(loop: Loop, tmp_path: Path,
                                                                          faults: Make) -> None:
    rejection = CONTEXT_ERRORS[0].values[0]
    r, servers = windows(loop, tmp_path, faults, rejection, ("primary", "small"))  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError) as caught:
        r.chat()
    assert caught.value.response.json() == rejection
    assert caught.value.response.headers["x-switchyard-upstream"] == "primary"
    assert {name: s.count for name, s in servers.items()} == {"primary": 1, "small": 0, "big": 0}


CONTENT_FILTER = {"error": {"message": "The response was filtered due to the prompt triggering Azure OpenAI's content "
                            "management policy.", "type": None, "param": "prompt", "code": "content_filter",
                            "status": 400}}


@pytest.mark.parametrize("rejection", [
    pytest.param(Status(400, body=CONTENT_FILTER), id="content-filter"),
    pytest.param(Status(422, "temperature must be at most 2"), id="422"),
])
@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "stream"])
def test_a_client_error_is_returned_as_is_without_retry_or_fallback(loop: Loop, tmp_path: Path, faults: Make,
                                                                    rejection: Status, streamed: bool) -> None:
    r, primary, fallback = pair(loop, tmp_path, faults, [rejection], Json(), resilience={"attempts_per_upstream": 3})
    with pytest.raises(openai.APIStatusError) as caught:
        r.client().chat.completions.create(model="chat", messages=HELLO, stream=streamed)
    assert caught.value.status_code == rejection.status
    if rejection.body is not None:
        assert caught.value.response.json() == rejection.body
    assert caught.value.response.headers["x-switchyard-upstream"] == "primary"
    assert (primary.count, fallback.count) == (1, 0)


# Circuits


ATTEMPTS = 2
CIRCUIT = {"attempts_per_upstream": ATTEMPTS, "circuit": {"failures": 2, "open_s": 0.5}}


def test_an_open_circuit_sends_traffic_to_the_fallback_until_the_primary_is_back(loop: Loop, tmp_path: Path,
                                                                                 faults: Make) -> None:
    open_s = 2.0  # long enough for a loaded machine to answer requests while it is open
    r, primary, fallback = pair(loop, tmp_path, faults, Status(503), Json(),
                                resilience={**CIRCUIT, "circuit": {"failures": 2, "open_s": open_s}})
    assert r.served_by() == "fallback"
    assert primary.count == 2
    opened = primary.arrivals[1].at  # the circuit opened after this, so it stays open until opened + open_s at least
    assert r.metric("switchyard_circuit_state", upstream="primary") == 2
    assert r.metric("switchyard_fallbacks_total", route="chat", from_upstream="primary", to_upstream="fallback",
                    reason="http_503") == 1
    primary.default = Json()  # healthy again: from now on only the circuit keeps traffic off it
    while_open = 0
    while True:
        upstream = r.served_by()
        if time.monotonic() >= opened + open_s:
            break  # this one may have been decided after the circuit went half-open: it proves nothing
        assert (upstream, primary.count) == ("fallback", 2)
        while_open += 1
    assert while_open >= 1
    if upstream != "primary":  # the request that ended the loop was not yet the probe
        wait_for(lambda: r.served_by() == "primary", what="traffic back on the primary")
    assert primary.count == 3  # exactly one probe
    assert primary.arrivals[2].at - opened >= open_s
    assert r.metric("switchyard_circuit_state", upstream="primary") == 0
    assert httpx.get(r.served.url + "/readyz").json()["circuits"]["primary"] == "closed"
    assert r.served_by() == "primary"
    assert primary.count == 4
    assert fallback.count >= 1 + while_open


def test_a_failed_probe_opens_the_circuit_again(loop: Loop, tmp_path: Path, faults: Make) -> None:
    open_s = 2.0  # long enough for a loaded machine to ask again while it is open again
    r, primary, _ = pair(loop, tmp_path, faults, Status(503), Json(),
                         resilience={**CIRCUIT, "circuit": {"failures": 2, "open_s": open_s}})
    assert r.served_by() == "fallback"
    assert primary.count == 2
    opened = primary.arrivals[1].at
    wait_for(lambda: r.served_by() == "fallback" and primary.count > 2, what="the probe")
    probes = primary.arrivals[2:]
    assert 1 <= len(probes) <= ATTEMPTS  # one probe request (its retry on the same upstream is let through too)
    assert probes[0].at - opened >= open_s
    assert r.metric("switchyard_circuit_state", upstream="primary") == 2
    before = primary.count
    assert r.served_by() == "fallback"
    assert primary.count == before  # open again: skipped


def test_the_circuit_gauge_shows_half_open_while_the_probe_is_out(loop: Loop, tmp_path: Path, faults: Make) -> None:
    r, primary, _ = pair(loop, tmp_path, faults, Status(503), Json(), resilience=CIRCUIT)
    assert r.served_by() == "fallback"
    primary.default = Hang()
    opened = primary.arrivals[1].at
    wait_for(lambda: time.monotonic() > opened + 0.6, what="open_s to pass")
    probe = threading.Thread(target=r.served_by)
    probe.start()
    try:
        wait_for(lambda: primary.count == 3, what="the probe")
        assert httpx.get(r.served.url + "/readyz").json()["circuits"]["primary"] == "half_open"
        assert r.metric("switchyard_circuit_state", upstream="primary") == 1
    finally:
        loop.run(primary.stop())  # the hung probe fails at once, and the fallback answers it
        probe.join(timeout=30)


def test_only_the_probe_itself_frees_the_probe_slot(loop: Loop, tmp_path: Path, faults: Make) -> None:
    primary = faults("primary", Hang(), Status(503), Hang(), default=Json())
    fallback = faults("fallback")
    r = rig(loop, tmp_path, {"primary": primary, "fallback": fallback},
            resilience={"attempts_per_upstream": 1, "circuit": {"failures": 1, "open_s": 0.3}})
    early = waiting(r)  # admitted while the circuit is closed; the primary never answers it
    probe: socket.socket | None = None
    try:
        wait_for(lambda: primary.count == 1, what="the early request")
        assert r.served_by() == "fallback"  # the 503 opens the circuit
        opened = primary.arrivals[1].at
        wait_for(lambda: time.monotonic() > opened + 0.35, what="open_s to pass")
        probe = waiting(r)
        wait_for(lambda: primary.count == 3, what="the probe")
        early.close()  # its client leaves: that attempt ends with no verdict
        wait_for(lambda: primary.arrivals[0].closed, what="the early request to end")
        assert r.served_by() == "fallback"  # the probe is still out
        assert primary.count == 3
    finally:
        early.close()
        if probe is not None:
            probe.close()


# Load during an outage


def test_100_concurrent_requests_during_an_outage_stay_within_the_retry_budget(loop: Loop, tmp_path: Path,
                                                                               faults: Make) -> None:
    r, primary, fallback = pair(loop, tmp_path, faults, Status(503), Json(),
                                resilience={"attempts_per_upstream": 3, "circuit": {"failures": 10_000, "open_s": 30}})

    async def burst() -> list[str]:
        async with openai.AsyncOpenAI(base_url=r.base_url, api_key=KEY, max_retries=0, timeout=30) as client:
            raws = await asyncio.gather(*(client.chat.completions.with_raw_response.create(model="chat",
                                                                                          messages=HELLO)
                                          for _ in range(100)))
        return [raw.headers["x-switchyard-upstream"] for raw in raws]

    assert asyncio.run(burst()) == ["fallback"] * 100
    assert fallback.count == 100
    budget = 0.2 * 100 + 1.0 * 10  # Envoy's 20% of requests, plus a floor of one a second over the 10 s window
    assert 100 + 10 <= primary.count <= 100 + budget  # without the budget: 300
    assert r.metric("switchyard_retries_total", upstream="primary", reason="http_503") == primary.count - 100


# Residency under faults

RESIDENCY = {"data_classes": {"eu_only": {"regions": ["eu-west"]}},
             "tenants": {"acme": {"keys": [key_hash(KEY)], "data_class": "eu_only"}}}


def resident(loop: Loop, tmp_path: Path, faults: Make, eu: FaultServer,
             resilience: dict[str, Any]) -> tuple[Rig, FaultServer]:
    """eu (eu-west) and us (us-east), both able to continue; the tenant's data may only go to eu-west."""
    us = faults("us", default=answer("us"))
    r = rig(loop, tmp_path, {"eu": eu, "us": us}, resilience=resilience,
            specs={"eu": {"region": "eu-west", "capabilities": ["continuation"]},
                   "us": {"region": "us-east", "capabilities": ["continuation"]}}, **RESIDENCY)
    return r, us


@pytest.mark.parametrize(("fault", "attempts", "per_try", "streamed"), [
    pytest.param(Status(503), 2, 5, False, id="plain-503"),
    pytest.param(Reset(), 2, 5, False, id="plain-reset"),
    pytest.param(Hang(), 1, 0.5, False, id="plain-hang"),
    pytest.param(SilentClose(1.05), 1, 5, False, id="plain-silent-close"),
    pytest.param(Status(503), 2, 5, True, id="stream-503"),
    pytest.param(Reset(), 2, 5, True, id="stream-reset"),
])
def test_residency_holds_when_the_only_allowed_upstream_fails(loop: Loop, tmp_path: Path, faults: Make,
                                                              fault: Behaviour, attempts: int, per_try: float,
                                                              streamed: bool) -> None:
    eu = faults("eu", default=fault)
    r, us = resident(loop, tmp_path, faults, eu, {"per_try_timeout_s": per_try})
    with pytest.raises(openai.PermissionDeniedError) as caught:
        r.client().chat.completions.create(model="chat", messages=HELLO, stream=streamed)
    assert caught.value.response.json()["error"]["code"] == "residency_unavailable"
    assert (eu.count, us.count) == (attempts, 0)


def test_residency_holds_when_a_stream_is_cut_and_only_an_outsider_could_continue(loop: Loop, tmp_path: Path,
                                                                                  faults: Make) -> None:
    eu = faults("eu", answer("eu", cut_after=5), Status(503))
    r, us = resident(loop, tmp_path, faults, eu, {})
    got = stream(r)
    assert got.text == "".join(words("eu")[:4])
    assert_interrupted(got)
    assert (eu.count, us.count) == (2, 0)  # the cut, then a continuation asked of eu alone
    assert eu.arrivals[1].body["continue_final_message"] is True


# Clients that leave


def test_a_client_leaving_mid_stream_closes_the_upstream_and_releases_the_slot(loop: Loop, tmp_path: Path,
                                                                               faults: Make) -> None:
    r, primary, _ = pair(loop, tmp_path, faults, answer("primary", stall_after=4), answer("fallback"))
    with httpx.stream("POST", r.base_url + "/chat/completions", headers=AUTH, timeout=30,
                      json={"model": "chat", "messages": HELLO, "stream": True}) as response:
        received = b""
        for part in response.iter_raw():
            received += part
            if received.count(b"\n\n") >= 4:
                break
    wait_for(lambda: primary.arrivals[0].closed, what="the upstream to see the client go")
    wait_for(lambda: r.metric("switchyard_inflight_requests", upstream="primary") == 0, what="inflight back to 0")
    wait_for(lambda: r.metric("switchyard_requests_total", tenant="acme", endpoint="chat", route="chat",
                              upstream="primary", status="499") == 1,
             what="the request counted as 499")
    assert primary.count == 1


def test_a_client_leaving_before_the_answer_closes_the_upstream(loop: Loop, tmp_path: Path, faults: Make) -> None:
    r, primary, fallback = pair(loop, tmp_path, faults, Hang(), Json())
    client = waiting(r)
    try:
        wait_for(lambda: primary.count == 1, what="the request to reach the upstream")
        assert r.metric("switchyard_inflight_requests", upstream="primary") == 1
    finally:
        client.close()
    wait_for(lambda: primary.count == 1 and primary.arrivals[0].closed, what="the upstream to see the client go")
    wait_for(lambda: r.metric("switchyard_inflight_requests", upstream="primary") == 0, what="inflight back to 0")
    assert fallback.count == 0


def test_a_stream_in_progress_holds_its_upstream_slot(loop: Loop, tmp_path: Path, faults: Make) -> None:
    r, primary, _ = pair(loop, tmp_path, faults, answer("primary", stall_after=4), Json(),
                         specs={"primary": {"max_concurrency": 1}})
    with httpx.stream("POST", r.base_url + "/chat/completions", headers=AUTH, timeout=30,
                      json={"model": "chat", "messages": HELLO, "stream": True}) as response:
        received = b""
        parts = response.iter_raw()  # kept referenced: a dropped iterator would close the connection
        for part in parts:
            received += part
            if received.count(b"\n\n") >= 4:
                break
        assert r.metric("switchyard_inflight_requests", upstream="primary") == 1
        assert r.served_by() == "fallback"  # the primary is at its max_concurrency of 1
    assert primary.count == 1


# Redirects are never followed


@pytest.mark.parametrize("status", [307, 302])
def test_a_redirect_is_an_upstream_error_and_its_location_is_never_asked(loop: Loop, tmp_path: Path, faults: Make,
                                                                        status: int) -> None:
    elsewhere = faults("elsewhere")  # a host:port in no policy: a 307 would re-POST the prompt there
    r, primary, fallback = pair(loop, tmp_path, faults, Redirect(status, elsewhere.url + "/v1/chat/completions"),
                                Json(), resilience={"attempts_per_upstream": 3})
    headers, completion = r.chat()
    assert headers["x-switchyard-upstream"] == "fallback"
    assert completion.choices[0].message.content == "fallback answers"
    assert elsewhere.count == 0
    assert (primary.count, fallback.count) == (1, 1)  # not asked again: the next candidate at once
    assert r.metric("switchyard_upstream_errors_total", upstream="primary", reason="redirect") == 1


def test_a_redirect_from_the_only_candidate_is_a_502_and_the_body_is_not_relayed(loop: Loop, tmp_path: Path,
                                                                                faults: Make) -> None:
    elsewhere = faults("elsewhere")
    only = faults("only", default=Redirect(302, elsewhere.url + "/secret"))
    r = rig(loop, tmp_path, {"only": only})
    with pytest.raises(openai.APIStatusError) as caught:
        r.chat()
    assert caught.value.status_code == 502
    assert "only: redirect" in caught.value.message
    assert "moved" not in caught.value.response.text
    assert elsewhere.count == 0


def test_redirects_count_against_the_circuit(loop: Loop, tmp_path: Path, faults: Make) -> None:
    elsewhere = faults("elsewhere")
    r, primary, _ = pair(loop, tmp_path, faults, Redirect(307, elsewhere.url), Json(), resilience=CIRCUIT)
    assert r.served_by() == "fallback"
    assert r.served_by() == "fallback"
    assert primary.count == 2
    assert r.metric("switchyard_circuit_state", upstream="primary") == 2
    assert r.served_by() == "fallback"
    assert primary.count == 2
    assert elsewhere.count == 0


# 501 and the statuses that are retried

LLAMA_501 = {"error": {"code": 501, "message": "This server does not support embeddings. Start it with `--embeddings`",
                       "type": "not_supported_error"}}


def test_a_501_is_not_retried_not_counted_and_its_message_reaches_the_client(loop: Loop, tmp_path: Path,
                                                                            faults: Make) -> None:
    only = faults("only", *[Status(501, body=LLAMA_501)] * 3)
    r = rig(loop, tmp_path, {"only": only}, resilience={**CIRCUIT, "attempts_per_upstream": 3})
    for tries in range(1, 4):  # more than circuit.failures of them
        with pytest.raises(openai.APIStatusError) as caught:
            r.chat()
        assert caught.value.status_code == 501
        assert caught.value.response.json() == LLAMA_501
        assert only.count == tries  # never asked twice
    assert r.metric("switchyard_circuit_state", upstream="only") in (None, 0)
    assert r.served_by() == "only"  # chat on the same upstream still goes there


def test_a_501_moves_on_to_the_next_candidate(loop: Loop, tmp_path: Path, faults: Make) -> None:
    r, primary, fallback = pair(loop, tmp_path, faults, Status(501, body=LLAMA_501), Json(),
                                resilience={"attempts_per_upstream": 3})
    assert r.served_by() == "fallback"
    assert (primary.count, fallback.count) == (1, 1)


@pytest.mark.parametrize(("status", "tries"), [(500, 3), (502, 3), (503, 3), (504, 3), (505, 1), (507, 1)])
def test_only_the_documented_5xx_are_retried(loop: Loop, tmp_path: Path, faults: Make, status: int,
                                             tries: int) -> None:
    r, primary, fallback = pair(loop, tmp_path, faults, Status(status), Json(),
                                resilience={"attempts_per_upstream": 3})
    assert r.served_by() == "fallback"
    assert (primary.count, fallback.count) == (tries, 1)


# Context-length errors as real servers word them, recognised by their structured fields first

REAL_CONTEXT_ERRORS = [
    pytest.param(Status(400, body={"error": {"message": "max_tokens=600 cannot be greater than max_model_len=512. "
                                             "Please request fewer output tokens.", "type": "BadRequestError",
                                             "param": "max_tokens", "code": 400}}), id="vllm-0.32-max-tokens"),
    pytest.param(Status(400, body={"error": {"code": 400, "message": "request (5000 tokens) exceeds the available "
                                             "context size (4096 tokens), try increasing it",
                                             "type": "exceed_context_size_error", "n_prompt_tokens": 5000,
                                             "n_ctx": 4096}}), id="llama.cpp-type"),
    pytest.param(Status(500, body={"error": {"code": 500, "message": "input (5000 tokens) is too large to process. "
                                             "increase the physical batch size (current batch size: 2048)",
                                             "type": "server_error"}}), id="llama.cpp-500"),
]


@pytest.mark.parametrize("rejection", REAL_CONTEXT_ERRORS)
def test_real_servers_context_errors_move_to_a_larger_window(loop: Loop, tmp_path: Path, faults: Make,
                                                             rejection: Status) -> None:
    servers = {"primary": faults("primary", default=rejection), "big": faults("big")}
    r = rig(loop, tmp_path, servers, specs={"primary": {"context_window": 1024}, "big": {"context_window": 32768}},
            resilience={**CIRCUIT, "attempts_per_upstream": 3})
    for _ in range(3):  # a context refusal is the request's doing: never retried, never opens the circuit
        assert r.served_by() == "big"
    assert servers["primary"].count == 3
    assert r.metric("switchyard_circuit_state", upstream="primary") in (None, 0)


# What counts against a circuit: a timeout only when the request was small

BIG_PROMPT: list[ChatCompletionMessageParam] = [{"role": "user", "content": "word " * 8000}]  # 40 KB


@pytest.mark.parametrize("big", [
    pytest.param({"max_tokens": 4000}, id="large-max-tokens"),
    pytest.param({"messages": BIG_PROMPT, "max_tokens": 10}, id="big-prompt"),
    pytest.param({"messages": BIG_PROMPT, "stream": True}, id="big-prompt-stream"),
])
def test_timeouts_of_one_tenants_big_requests_do_not_open_the_circuit_every_tenant_shares(
        loop: Loop, tmp_path: Path, faults: Make, big: dict[str, Any]) -> None:
    served = answer("fallback") if big.get("stream") else Json()
    r, primary, fallback = pair(loop, tmp_path, faults, [Hang()] * 5, served,
                                resilience={**CIRCUIT, "per_try_timeout_s": 0.5, "ttft_timeout_s": 0.5})
    for _ in range(5):  # tenant acme's slow requests: each times out on the primary, the fallback serves it
        body = {"model": "chat", "messages": HELLO, **big}
        response = httpx.post(r.base_url + "/chat/completions", headers=AUTH, json=body, timeout=30)
        assert response.status_code == 200
        assert response.headers["x-switchyard-upstream"] == "fallback"
    assert (primary.count, fallback.count) == (5, 5)
    assert r.metric("switchyard_upstream_errors_total", upstream="primary", reason="timeout") == 5
    other = r.loop.client(r.base_url, OTHER_KEY)  # tenant limited, a small request
    raw = other.chat.completions.with_raw_response.create(model="chat", messages=HELLO, max_tokens=16)
    assert raw.headers["x-switchyard-upstream"] == "primary"
    assert r.metric("switchyard_circuit_state", upstream="primary") in (None, 0)


def test_timeouts_of_small_requests_do_open_the_circuit(loop: Loop, tmp_path: Path, faults: Make) -> None:
    r, primary, _ = pair(loop, tmp_path, faults, [Hang()] * 5, Json(),
                         resilience={**CIRCUIT, "per_try_timeout_s": 0.5})
    for _ in range(3):
        assert r.chat(max_tokens=16)[0]["x-switchyard-upstream"] == "fallback"
    assert primary.count == 2  # two small timeouts opened it: the third request skipped the primary
    assert r.metric("switchyard_circuit_state", upstream="primary") == 2


# Error bodies that are not OpenAI's JSON

HTML_503 = b"<html><head><title>503</title></head><body><h1>Service Temporarily Unavailable</h1>nginx</body></html>"


def test_an_html_error_body_reaches_the_client_as_an_openai_error_with_an_excerpt(loop: Loop, tmp_path: Path,
                                                                                 faults: Make) -> None:
    html = b"<html><body><h1>400 Bad Request</h1><p>Request Header Or Cookie Too Large</p></body></html>"
    only = faults("only", default=Echo(lambda _: html, status=400, content_type="text/html"))
    r = rig(loop, tmp_path, {"only": only})
    with pytest.raises(openai.BadRequestError) as caught:
        r.chat()
    assert caught.value.response.headers["content-type"].startswith("application/json")
    error = caught.value.response.json()["error"]
    assert error["code"] == "upstream_http_400"
    assert "400 Bad Request Request Header Or Cookie Too Large" in error["message"]
    assert "<" not in error["message"]


def test_html_5xx_from_every_candidate_gives_the_gateways_json_502(loop: Loop, tmp_path: Path, faults: Make) -> None:
    r, primary, fallback = pair(loop, tmp_path, faults, Echo(lambda _: HTML_503, 503, "text/html"),
                                Echo(lambda _: HTML_503, 503, "text/html"))
    with pytest.raises(openai.APIStatusError) as caught:
        r.chat()
    assert caught.value.status_code == 502
    assert caught.value.response.json()["error"]["code"] == "upstream_error"
    assert (primary.count, fallback.count) == (2, 2)  # a 503 is retried, whatever its body


# An upstream's stream: one event over the limit, and a key split across two reads

PROVIDER_KEY = "sk-prov-77aa88bb99cc00dd11ee22ff33-split"


def test_an_event_over_the_limit_after_the_first_ends_the_stream_with_an_error_event(loop: Loop, tmp_path: Path,
                                                                                    faults: Make) -> None:
    model = "only-model"
    huge = b'data: {"choices": [{"index": 0, "delta": {"content": "' + b"x" * (2 << 20)
    only = faults("only", default=Sse((*chat_events(model, ["one ", "two "], finish=False, with_usage=False), huge),
                                      done=False))
    r = rig(loop, tmp_path, {"only": only}, specs={"only": {"limits": {"sse_event_bytes": 1 << 20}}})
    got = stream(r)
    assert got.text == "one two "
    assert_interrupted(got)
    assert r.metric("switchyard_stream_failures_total", upstream="only", reason="event_too_large",
                    outcome="error_event") == 1


def test_a_key_split_across_two_reads_of_one_event_is_still_cut_out(loop: Loop, tmp_path: Path,
                                                                    faults: Make) -> None:
    model = "only-model"
    whole = chunk(model, f"the key is {PROVIDER_KEY}!")
    cut = whole.index(PROVIDER_KEY.encode()) + 6
    events = (chunk(model, role=True), whole[:cut], whole[cut:], chunk(model, finish="stop"))
    only = faults("only", default=Sse(events, delays=(0, 0, 0.05, 0)))
    r = rig(loop, tmp_path, {"only": only}, specs={"only": {"api_key": PROVIDER_KEY}})
    got = stream(r)
    assert got.complete
    assert got.text == "the key is [redacted]!"
    assert PROVIDER_KEY[:8].encode() not in got.raw
