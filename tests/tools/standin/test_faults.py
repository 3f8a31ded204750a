"""The raw fault server on loopback: it follows its script, then its default, and records every arrival."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import orjson
import pytest

from gateway.tools.standin import (
    DONE,
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
)
from tests.conftest import Loop, wait_for

BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def started(loop: Loop) -> Iterator[list[FaultServer]]:
    servers: list[FaultServer] = []
    yield servers
    for server in servers:
        loop.run(server.stop())


def serve(loop: Loop, started: list[FaultServer], *script: object, default: object = None) -> FaultServer:
    server = FaultServer("f", script, default)  # type: ignore[arg-type]
    loop.run(server.start())
    started.append(server)
    return server


def post(server: FaultServer, **options: object) -> httpx.Response:
    return httpx.post(server.url + "/v1/chat/completions", json=BODY, timeout=5, **options)  # type: ignore[arg-type]


def read_into(server: FaultServer, got: list[bytes]) -> None:
    """Read a streamed answer's bytes into got as they come."""
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=BODY, timeout=5) as streamed:
        got.extend(streamed.iter_raw())


def test_the_script_is_followed_then_the_default(loop: Loop, started: list[FaultServer]) -> None:
    server = serve(loop, started, Status(503, retry_after="2"), Json(content="second"))
    first = post(server)
    assert (first.status_code, first.headers["retry-after"]) == (503, "2")
    assert first.json()["error"]["code"] == "503"
    assert post(server).json()["choices"][0]["message"]["content"] == "second"
    assert post(server).json()["choices"][0]["message"]["content"] == "f answers"
    assert server.count == 3
    assert server.arrivals[0].body == BODY
    assert len(server.gaps()) == 2
    assert all(gap >= 0 for gap in server.gaps())


@pytest.mark.parametrize("behaviour", [Reset(), SilentClose()])
def test_a_reset_or_a_silent_close_is_no_response(loop: Loop, started: list[FaultServer], behaviour: object) -> None:
    server = serve(loop, started, behaviour)
    with pytest.raises(httpx.TransportError):
        post(server)


def test_a_hang_answers_nothing_and_sees_the_client_go(loop: Loop, started: list[FaultServer]) -> None:
    server = serve(loop, started, Hang())
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server.url + "/v1/chat/completions", json=BODY, timeout=0.3)
    wait_for(lambda: server.arrivals[0].closed, what="the hang to see the client leave")


def test_a_stream_sends_its_events_and_done_chunked(loop: Loop, started: list[FaultServer]) -> None:
    events = chat_events("m", ["a ", "b "])
    server = serve(loop, started, Sse(events))
    answer = post(server)
    assert answer.headers["transfer-encoding"] == "chunked"
    assert answer.content == b"".join(events) + DONE


def test_a_stream_cut_after_k_events_sends_k(loop: Loop, started: list[FaultServer]) -> None:
    events = chat_events("m", ["a ", "b ", "c "])
    server = serve(loop, started, Sse(events, cut_after=2))
    got: list[bytes] = []
    with pytest.raises(httpx.RemoteProtocolError):
        read_into(server, got)
    assert b"".join(got) == b"".join(events[:2])


def test_a_redirect_and_an_echo(loop: Loop, started: list[FaultServer]) -> None:
    server = serve(loop, started, Redirect(307, "http://127.0.0.1:9/elsewhere"),
                   Echo(lambda key: orjson.dumps({"echo": key})))
    moved = post(server)
    assert (moved.status_code, moved.headers["location"]) == (307, "http://127.0.0.1:9/elsewhere")
    echoed = post(server, headers={"authorization": "Bearer sk-secret"})
    assert echoed.json() == {"echo": "sk-secret"}
