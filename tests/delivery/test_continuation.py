"""A continuation is an attempt like any other: through the dispatcher's fallback loop, under the request's deadline.

A cut stream's primary is held mid-answer (a Flood paused at hold_at) while the test changes the state of the
upstreams that could continue it: an opened circuit, a full in-flight cap, a spent retry budget. Then the cut comes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from gateway.serving.app import Gateway, Settings
from gateway.tools.standin import FaultServer, Flood, Hang, Sse, Status, chat_events
from tests.conftest import KEY, Loop, upstream_spec, wait_for, write_policy
from tests.guarantees.rig import AUTH, BASE, HELLO, SLACK_S, Faults, Rig

SAID = [f"said{i} " for i in range(3)]
REST = [f"rest{i} " for i in range(3)]


@pytest.fixture
def faults(loop: Loop) -> Iterator[Faults]:
    made = Faults(loop)
    yield made
    made.stop()


@dataclass
class Held:
    """A stream that sends its first events, waits for go, then sends one more word and ends unfinished (a cut)."""

    go: threading.Event
    behaviour: Flood


def held(model: str, words: list[str]) -> Held:
    head = b"".join(chat_events(model, words, finish=False, with_usage=False))
    tail = chat_events(model, ["late "], role=False, finish=False, with_usage=False)[0]
    go = threading.Event()
    return Held(go, Flood(len(head) + len(tail), content_type="text/event-stream", head=head, fill=tail,
                          hold_at=len(head), go=go))


def gateway(loop: Loop, tmp_path: Path, servers: dict[str, FaultServer], routes: dict[str, list[str]],
            continuation: tuple[str, ...], resilience: dict[str, Any] | None = None,
            caps: dict[str, int] | None = None) -> Rig:
    """A gateway with routes over servers; those named in continuation declare it, caps set max_concurrency."""
    specs = {name: upstream_spec(server.url, model=f"{name}-model", capabilities=(
                 ["continuation"] if name in continuation else []), **(
                 {"max_concurrency": caps[name]} if caps and name in caps else {}))
             for name, server in servers.items()}
    path = write_policy(tmp_path, specs, {route: {"candidates": names} for route, names in routes.items()},
                        resilience={**BASE, **(resilience or {})})
    return Rig(loop.serve(Gateway(Settings(policy=str(path), reload_interval_s=0))))


@dataclass
class Read:
    """What the openai client read of a stream: its text, and the error that ended it, if one did."""

    text: str
    error: str | None = None


def read(chunks: openai.Stream[Any]) -> Read:
    got = Read("")
    try:
        for chunk in chunks:
            got.text += "".join(choice.delta.content or "" for choice in chunk.choices)
    except openai.APIError as exc:
        got.error = exc.message
    return got


def continued_after(r: Rig, loop: Loop, primary: FaultServer, hold: Held, meanwhile: Callable[[], None]) -> Read:
    """Open a stream on route chat, run meanwhile once the primary holds mid-answer, then let it cut; what came."""
    client = loop.client(r.base_url, KEY, timeout=30)
    chunks = client.chat.completions.create(model="chat", messages=HELLO, stream=True)  # type: ignore[arg-type]
    wait_for(lambda: primary.count == 1 and primary.arrivals[0].held.is_set(), what="the primary to hold")
    meanwhile()
    hold.go.set()
    return read(chunks)


def test_a_continuation_skips_an_upstream_whose_circuit_opened_during_the_stream(loop: Loop, tmp_path: Path,
                                                                                 faults: Faults) -> None:
    hold = held("primary-model", SAID)
    primary = faults("primary", default=hold.behaviour)
    shaky = faults("shaky", default=Status(503))
    spare = faults("spare", default=Sse(chat_events("spare-model", REST, role=False)))
    r = gateway(loop, tmp_path, {"primary": primary, "shaky": shaky, "spare": spare},
                {"chat": ["primary", "shaky", "spare"], "other": ["shaky"]}, continuation=("shaky", "spare"),
                resilience={"attempts_per_upstream": 1, "circuit": {"failures": 1, "open_s": 60}})

    def open_shakys_circuit() -> None:
        answer = httpx.post(r.base_url + "/chat/completions", headers=AUTH, timeout=30,
                            json={"model": "other", "messages": HELLO})
        assert answer.status_code == 502
        assert r.metric("switchyard_circuit_state", upstream="shaky") == 2

    got = continued_after(r, loop, primary, hold, open_shakys_circuit)
    assert got == Read("".join([*SAID, "late ", *REST]))
    assert (shaky.count, spare.count) == (1, 1)  # shaky: only the request that opened its circuit
    assert r.metric("switchyard_fallbacks_total", route="chat", from_upstream="shaky", to_upstream="spare",
                    reason="circuit_open") == 1
    assert spare.arrivals[0].body["continue_final_message"] is True


def test_a_continuation_skips_an_upstream_at_its_inflight_cap(loop: Loop, tmp_path: Path, faults: Faults) -> None:
    hold, occupying = held("primary-model", SAID), held("busy-model", ["busy "])
    primary = faults("primary", default=hold.behaviour)
    busy = faults("busy", occupying.behaviour, default=Status(503))
    spare = faults("spare", default=Sse(chat_events("spare-model", REST, role=False)))
    r = gateway(loop, tmp_path, {"primary": primary, "busy": busy, "spare": spare},
                {"chat": ["primary", "busy", "spare"], "other": ["busy"]}, continuation=("busy", "spare"),
                caps={"busy": 1})
    occupier = httpx.Client(timeout=30)
    try:
        with occupier.stream("POST", r.base_url + "/chat/completions", headers=AUTH,
                             json={"model": "other", "messages": HELLO, "stream": True}) as taken:
            assert taken.status_code == 200  # busy's one slot is held while this stream runs

            def check_busy_is_full() -> None:
                assert r.metric("switchyard_inflight_requests", upstream="busy") == 1

            got = continued_after(r, loop, primary, hold, check_busy_is_full)
            assert (busy.count, spare.count) == (1, 1)  # busy: only the stream that holds its slot
    finally:
        occupying.go.set()
        occupier.close()
    assert got == Read("".join([*SAID, "late ", *REST]))
    assert r.metric("switchyard_fallbacks_total", route="chat", from_upstream="busy", to_upstream="spare",
                    reason="saturated") == 1


def test_a_continuation_is_paid_for_from_the_retry_budget(loop: Loop, tmp_path: Path, faults: Faults) -> None:
    hold = held("primary-model", SAID)
    primary = faults("primary", default=hold.behaviour)
    spare = faults("spare", default=Sse(chat_events("spare-model", REST, role=False)))
    broken = faults("broken", default=Status(503))
    r = gateway(loop, tmp_path, {"primary": primary, "spare": spare, "broken": broken},
                {"chat": ["primary", "spare"], "other": ["broken"]}, continuation=("spare",),
                resilience={"attempts_per_upstream": 10, "circuit": {"failures": 10_000}})
    client = loop.client(r.base_url, KEY, timeout=30)
    tries = []
    while not tries or tries[-1] > 1:  # retry until the budget says no: 10 retries a window plus 20% of requests
        before = broken.count
        with pytest.raises(openai.APIStatusError):
            client.chat.completions.create(model="other", messages=HELLO)  # type: ignore[arg-type]
        tries.append(broken.count - before)
    assert tries == [10, 2, 1]  # 9 retries, then 1 more (10 + 0.2 * 2), then none (11 > 10 + 0.2 * 3)
    got = continued_after(r, loop, primary, hold, lambda: None)  # a fourth request: 11 > 10 + 0.2 * 4
    assert got.text == "".join([*SAID, "late "])
    assert "could not be continued" in (got.error or "")
    assert spare.count == 0
    assert r.metric("switchyard_stream_failures_total", upstream="primary", reason="incomplete",
                    outcome="error_event") == 1


def test_the_first_attempts_and_the_continuation_share_one_deadline(loop: Loop, tmp_path: Path,
                                                                     faults: Faults) -> None:
    deadline, ttft = 2.5, 1.5
    late = faults("late", default=Sse(chat_events("late-model", SAID), stall_after=0))  # headers, then silence
    primary = faults("primary", Sse(chat_events("primary-model", SAID), cut_after=3), default=Hang())
    r = gateway(loop, tmp_path, {"late": late, "primary": primary}, {"chat": ["late", "primary"]},
                continuation=("primary",), resilience={"ttft_timeout_s": ttft, "deadline_s": deadline})
    got = r.stream()
    # late used ttft of the deadline; the continuation (primary again, which hangs) only what was left of it
    assert got.seconds < deadline + SLACK_S < ttft + deadline
    assert got.seconds >= deadline - 0.1
    assert got.error_code == "stream_interrupted"
    assert got.text == "".join(SAID[:2])
    assert (late.count, primary.count) == (1, 2)
    wait_for(lambda: primary.arrivals[1].closed, what="the continuation's request to be given up")
    assert r.metric("switchyard_upstream_errors_total", upstream="primary", reason="continuation_timeout") == 1
