"""A translated upstream's exchanges: a whole answer, a stream closed once, and a client idle once nothing is open."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import pytest

from gateway.errors import UpstreamCut
from gateway.upstreams.answers import JSON, Answer, EventStream, Lifetimes
from gateway.upstreams.translate import EVENT_STREAM


@contextmanager
def cuts(upstream: str) -> Iterator[None]:
    """What an adapter passes as errors: a library's exception becomes ours."""
    try:
        yield
    except ConnectionResetError as exc:
        raise UpstreamCut(upstream, str(exc)) from exc


class Upstream:
    """A provider response: frames to yield, and a count of how often it was closed."""

    def __init__(self, frames: list[bytes], fail: bool = False, close_fails: bool = False) -> None:
        self.frames = frames
        self.fail = fail
        self.close_fails = close_fails
        self.closes = 0

    async def read(self) -> AsyncIterator[bytes]:
        for frame in self.frames:
            yield frame
        if self.fail:
            raise ConnectionResetError("reset by peer")

    async def aclose(self) -> None:
        self.closes += 1
        if self.close_fails:
            raise OSError("already gone")


def test_an_answer_is_a_200_of_json_read_whole_or_as_one_chunk() -> None:
    answer = Answer("primary", b'{"id": "x"}')

    async def run() -> tuple[bytes, list[bytes]]:
        return await answer.read(), [chunk async for chunk in answer.chunks()]

    assert asyncio.run(run()) == (b'{"id": "x"}', [b'{"id": "x"}'])
    assert (answer.status, answer.content_type, answer.upstream, answer.retry_after()) == (200, JSON, "primary", None)
    answer.close()


def test_a_stream_read_to_its_end_closes_its_response_once_and_leaves_its_client_idle() -> None:
    async def run() -> tuple[bytes, int, bool, bool]:
        upstream, lifetimes = Upstream([b"data: 1\n\n", b"data: [DONE]\n\n"]), Lifetimes()
        stream = EventStream("primary", upstream.read(), upstream.aclose, lifetimes, cuts)
        busy = not lifetimes.idle.is_set()
        body = await stream.read()
        stream.close()  # after its end: nothing left to close
        return body, upstream.closes, busy, lifetimes.idle.is_set()

    assert asyncio.run(run()) == (b"data: 1\n\ndata: [DONE]\n\n", 1, True, True)


def test_a_stream_closed_before_its_end_closes_its_response_in_a_task_the_client_waits_for() -> None:
    async def run() -> tuple[int, bool, int, bool]:
        upstream, lifetimes = Upstream([b"data: 1\n\n"]), Lifetimes()
        stream = EventStream("primary", upstream.read(), upstream.aclose, lifetimes, cuts)
        stream.close()
        pending = (len(lifetimes.tasks), lifetimes.idle.is_set())
        await asyncio.wait_for(lifetimes.idle.wait(), 10)
        stream.close()
        return *pending, upstream.closes, lifetimes.open == 0

    assert asyncio.run(run()) == (1, False, 1, True)


def test_a_failure_mid_stream_passes_through_errors_and_still_closes_the_response() -> None:
    upstream, lifetimes = Upstream([b"data: 1\n\n"], fail=True, close_fails=True), Lifetimes()

    async def run() -> list[bytes]:
        stream = EventStream("primary", upstream.read(), upstream.aclose, lifetimes, cuts)
        assert (stream.status, stream.content_type) == (200, EVENT_STREAM)
        return [chunk async for chunk in stream.chunks()]

    with pytest.raises(UpstreamCut, match="primary: cut: reset by peer"):
        asyncio.run(run())
    assert upstream.closes == 1  # its own failure to close is swallowed: the connection is going anyway
    assert lifetimes.idle.is_set()


def test_lifetimes_are_idle_only_once_no_exchange_and_no_kept_task_is_left() -> None:
    async def run() -> list[object]:
        lifetimes, ended = Lifetimes(), []
        states: list[object] = [lifetimes.idle.is_set()]
        lifetimes.opened()
        lifetimes.opened()
        lifetimes.closed()
        states.append(lifetimes.idle.is_set())
        gate = asyncio.Event()
        lifetimes.keep(asyncio.create_task(gate.wait()), lambda task: ended.append(task.result()))
        lifetimes.closed()
        states.append(lifetimes.idle.is_set())
        gate.set()
        await asyncio.wait_for(lifetimes.idle.wait(), 10)
        states += [ended, lifetimes.tasks]
        return states

    assert asyncio.run(run()) == [True, False, False, [True], set()]
