"""Streams under attack from their upstream or their server: a stall, a continuation that drags on, a drain.

A stall is continued on another candidate first, the whole request stays inside its deadline, and a stream the
server has to cut at shutdown ends with its error event, never silently or with a traceback in the log.
"""

from __future__ import annotations

import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.tools.standin import FaultServer, Hang, Sse, chat_events
from tests.conftest import Loop, upstream_spec, wait_for, write_policy
from tests.guarantees.rig import AUTH, HELLO, SLACK_S, Faults, Streamed, rig
from tests.tools.cli.helpers import free_port, ready, spawn

WHOLE = [f"word{i} " for i in range(12)]
SENT = 5  # content events the stalling upstream sends before it goes quiet


@pytest.fixture
def faults(loop: Loop) -> Iterator[Faults]:
    made = Faults(loop)
    yield made
    made.stop()


def stalling(close_after_s: float | None = None) -> Sse:
    """The role event and SENT words, then silence with the connection open (closed after close_after_s)."""
    return Sse(chat_events("primary-model", WHOLE), stall_after=1 + SENT, stall_s=close_after_s)


@pytest.mark.parametrize(("close_after_s", "idle", "reason"), [
    pytest.param(None, 0.5, "timeout", id="past-the-idle-timeout"),
    pytest.param(1.5, 10.0, "silent_close", id="silent-then-closed"),  # failoverbench S09, scaled down
])
def test_a_stall_is_continued_on_another_candidate_first(loop: Loop, tmp_path: Path, faults: Faults,
                                                         close_after_s: float | None, idle: float, reason: str) -> None:
    deadline = 5.0
    primary = faults("primary", default=stalling(close_after_s))  # asked again, it would stall again
    fallback = faults("fallback", default=Sse(chat_events("fallback-model", WHOLE[SENT:], role=False)))
    r = rig(loop, tmp_path, {"primary": primary, "fallback": fallback}, continuation=("primary", "fallback"),
            resilience={"stream_idle_timeout_s": idle, "deadline_s": deadline})
    got = r.stream()
    assert got.text == "".join(WHOLE)
    assert got.complete
    assert got.seconds < deadline
    assert (primary.count, fallback.count) == (1, 1)
    asked = fallback.arrivals[0].body
    assert asked["continue_final_message"] is True
    assert asked["messages"][-1] == {"role": "assistant", "content": "".join(WHOLE[:SENT])}
    assert r.metric("switchyard_stream_failures_total", upstream="primary", reason=reason, outcome="continued") == 1


def test_an_upstream_that_stalled_is_asked_again_only_after_every_other(loop: Loop, tmp_path: Path,
                                                                        faults: Faults) -> None:
    primary = faults("primary", default=stalling())
    second = faults("second", default=Sse(chat_events("second-model", WHOLE[SENT:], role=False), stall_after=2))
    third = faults("third", default=Sse(chat_events("third-model", WHOLE[SENT + 2:], role=False)))
    r = rig(loop, tmp_path, {"primary": primary, "second": second, "third": third},
            continuation=("primary", "second", "third"), resilience={"stream_idle_timeout_s": 0.5, "deadline_s": 6})
    got = r.stream()
    assert got.text == "".join(WHOLE)
    assert got.complete
    assert (primary.count, second.count, third.count) == (1, 1, 1)
    assert third.arrivals[0].body["messages"][-1]["content"] == "".join(WHOLE[:SENT + 2])


def test_a_continuation_still_running_at_the_deadline_is_ended_by_it(loop: Loop, tmp_path: Path,
                                                                    faults: Faults) -> None:
    deadline, idle = 2.5, 0.5
    slow = Sse(chat_events("fallback-model", [f"slow{i} " for i in range(40)], role=False), delays=(0.2,) * 42)
    primary = faults("primary", default=stalling())
    fallback = faults("fallback", default=slow)
    r = rig(loop, tmp_path, {"primary": primary, "fallback": fallback}, continuation=("primary", "fallback"),
            resilience={"stream_idle_timeout_s": idle, "deadline_s": deadline})
    got = r.stream()
    assert got.error_code == "stream_interrupted"
    assert b"[DONE]" not in got.raw
    assert got.text.startswith("".join(WHOLE[:SENT]) + "slow0 ")
    assert got.seconds < deadline + SLACK_S
    wait_for(lambda: fallback.arrivals[0].closed, what="the continuation's upstream request to be closed")
    assert primary.count == 1


def test_a_stall_noticed_after_the_deadline_is_not_continued(loop: Loop, tmp_path: Path, faults: Faults) -> None:
    primary = faults("primary", default=stalling())
    fallback = faults("fallback", default=Hang())
    r = rig(loop, tmp_path, {"primary": primary, "fallback": fallback}, continuation=("primary", "fallback"),
            resilience={"stream_idle_timeout_s": 1.2, "deadline_s": 1.0})
    got = r.stream()
    assert got.error_code == "stream_interrupted"
    assert got.text == "".join(WHOLE[:SENT])
    assert (primary.count, fallback.count) == (1, 0)
    assert r.metric("switchyard_stream_failures_total", upstream="primary", reason="timeout",
                    outcome="error_event") == 1


# An upstream that keeps the connection busy without saying anything: only events with data count for the timeouts

KEEPALIVES = [pytest.param(b": keepalive\n\n", id="comments"), pytest.param(b"\n", id="blank-lines")]
FOREVER = 600  # keepalives, 100 ms apart: a minute, far past every bound the tests assert


def chatter(keepalive: bytes, before: tuple[bytes, ...] = ()) -> Sse:
    """before, then a keepalive every 100 ms and never another event with data."""
    return Sse((*before, *(keepalive,) * FOREVER), delays=(0.0,) * len(before) + (0.1,) * FOREVER, done=False)


@pytest.mark.parametrize("keepalive", KEEPALIVES)
def test_keepalives_before_the_first_event_do_not_hold_off_the_ttft_timeout(loop: Loop, tmp_path: Path,
                                                                              faults: Faults, keepalive: bytes) -> None:
    ttft = 0.5
    primary = faults("primary", default=chatter(keepalive))
    fallback = faults("fallback", default=Sse(chat_events("fallback-model", WHOLE)))
    r = rig(loop, tmp_path, {"primary": primary, "fallback": fallback}, resilience={"ttft_timeout_s": ttft})
    got = r.stream()
    assert got.text == "".join(WHOLE)
    assert got.complete
    assert got.seconds < ttft + SLACK_S
    assert (primary.count, fallback.count) == (1, 1)
    wait_for(lambda: primary.arrivals[0].closed, what="the chattering connection to be closed")
    assert r.metric("switchyard_upstream_errors_total", upstream="primary", reason="timeout") == 1


@pytest.mark.parametrize("continuation", [False, True], ids=["error-event", "continued"])
@pytest.mark.parametrize("keepalive", KEEPALIVES)
def test_keepalives_mid_stream_do_not_hold_off_the_idle_timeout(loop: Loop, tmp_path: Path, faults: Faults,
                                                                keepalive: bytes, continuation: bool) -> None:
    idle = 0.5
    primary = faults("primary", default=chatter(keepalive, chat_events("primary-model", WHOLE[:SENT], finish=False,
                                                                       with_usage=False)))
    fallback = faults("fallback", default=Sse(chat_events("fallback-model", WHOLE[SENT:], role=False)))
    r = rig(loop, tmp_path, {"primary": primary, "fallback": fallback}, resilience={"stream_idle_timeout_s": idle},
            continuation=("fallback",) if continuation else ())
    got = r.stream()
    assert got.seconds < idle * 1.25 + SLACK_S  # the idle timer moves in steps of a quarter
    wait_for(lambda: primary.arrivals[0].closed, what="the chattering connection to be closed")
    outcome = "continued" if continuation else "error_event"
    assert r.metric("switchyard_stream_failures_total", upstream="primary", reason="timeout", outcome=outcome) == 1
    if continuation:
        assert got.text == "".join(WHOLE)
        assert got.complete
        assert fallback.arrivals[0].body["messages"][-1]["content"] == "".join(WHOLE[:SENT])
    else:
        assert got.text == "".join(WHOLE[:SENT])
        assert got.error_code == "stream_interrupted"
        assert fallback.count == 0


def test_keepalives_after_the_finish_reason_do_not_hold_the_stream_open(loop: Loop, tmp_path: Path,
                                                                        faults: Faults) -> None:
    primary = faults("primary", default=chatter(b": keepalive\n\n", chat_events("primary-model", WHOLE,
                                                                                  with_usage=False)))
    r = rig(loop, tmp_path, {"primary": primary}, resilience={"stream_idle_timeout_s": 10})
    got = r.stream()
    assert got.text == "".join(WHOLE)
    assert got.complete  # the finish_reason came: the gateway ends it with [DONE] after its one-second grace
    assert got.seconds < 1.0 + SLACK_S


def serving(tmp_path: Path, upstream: FaultServer) -> tuple[subprocess.Popen[bytes], int]:
    """`switchyard serve` with a one-second drain in front of upstream."""
    path = write_policy(tmp_path, {"primary": upstream_spec(upstream.url)}, {"chat": {"candidates": ["primary"]}})
    port = free_port()
    process = spawn(["serve", "--policy", str(path), "--port", str(port), "--drain-s", "1", "--log-level", "info"])
    wait_for(lambda: ready(port) or process.poll() is not None, timeout=30, what="switchyard serve")
    return process, port


def drained_log(process: subprocess.Popen[bytes]) -> str:
    """The process's log once it exited 0; one warning line for the stream it cut, no traceback."""
    log = process.communicate(timeout=30)[0].decode()
    assert process.returncode == 0
    assert "CancelledError" not in log
    assert "Traceback" not in log
    assert "Exception in ASGI application" not in log
    assert log.count("the drain deadline passed with this stream open") == 1
    return log


def test_a_drain_that_runs_out_ends_open_streams_with_an_error_event(loop: Loop, tmp_path: Path,
                                                                     faults: Faults) -> None:
    slow = faults("primary", default=Sse(chat_events("primary-model", WHOLE * 10), delays=(0.1,) * 200))
    process, port = serving(tmp_path, slow)
    try:
        got = stream_through_a_drain(port, process)
        drained_log(process)
    finally:
        stop(process)
    assert got.error_code == "stream_interrupted"
    assert b"[DONE]" not in got.raw
    assert got.text.startswith("word0 word1 ")


def test_a_drain_that_runs_out_before_a_streams_first_event_answers_503(loop: Loop, tmp_path: Path,
                                                                       faults: Faults) -> None:
    silent = faults("primary", default=Hang())
    process, port = serving(tmp_path, silent)
    answers: list[httpx.Response] = []

    def ask() -> None:  # headers come with the first event: until then the client waits
        answers.append(httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", headers=AUTH, timeout=30,
                                  json={"model": "chat", "messages": HELLO, "stream": True}))

    asking = threading.Thread(target=ask)
    try:
        asking.start()
        wait_for(lambda: silent.count == 1, what="the stream to reach its upstream")
        process.send_signal(signal.SIGTERM)
        asking.join(timeout=30)
        drained_log(process)
    finally:
        stop(process)
    assert answers[0].status_code == 503
    assert answers[0].json()["error"]["code"] == "shutting_down"


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
        process.communicate()


def stream_through_a_drain(port: int, process: subprocess.Popen[bytes]) -> Streamed:
    """Open a stream, send SIGTERM once its first words arrived, and read it to its end."""
    raw, signalled = b"", False
    with httpx.stream("POST", f"http://127.0.0.1:{port}/v1/chat/completions", headers=AUTH, timeout=30,
                      json={"model": "chat", "messages": HELLO, "stream": True}) as response:
        assert response.status_code == 200
        for part in response.iter_raw():
            raw += part
            if b"word1 " in raw and not signalled:
                process.send_signal(signal.SIGTERM)
                signalled = True
    return Streamed(raw, 0.0)
