"""The disconnect watch: it cancels a request's task when the client leaves, and costs nothing for a quick one."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.asgi import DisconnectWatch


class Client:
    """The receive side of an ASGI connection whose client leaves when told to."""

    def __init__(self) -> None:
        self.messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.receives = 0

    async def receive(self) -> dict[str, Any]:
        self.receives += 1
        return await self.messages.get()

    def leave(self) -> None:
        self.messages.put_nowait({"type": "http.disconnect"})


async def test_a_client_leaving_cancels_the_request_and_is_told_apart_from_other_cancels() -> None:
    client = Client()
    watching = asyncio.Event()

    async def request() -> None:
        task = asyncio.current_task()
        assert task is not None
        watch = DisconnectWatch(client.receive, task, after_s=0)
        try:
            watching.set()
            await asyncio.Event().wait()  # an upstream that never answers
        finally:
            assert watch.client_gone
            watch.stop()

    task = asyncio.create_task(request())
    await watching.wait()
    client.leave()
    done, _ = await asyncio.wait([task], timeout=5)
    assert done
    assert task.cancelled()


async def test_a_client_that_left_early_is_caught_once_watching_starts() -> None:
    client = Client()
    client.leave()
    task = asyncio.create_task(asyncio.Event().wait())
    DisconnectWatch(client.receive, task, after_s=0.01)
    done, _ = await asyncio.wait([task], timeout=5)
    assert done
    assert task.cancelled()


async def test_a_request_answered_before_watching_starts_never_watches() -> None:
    client = Client()
    task = asyncio.create_task(asyncio.sleep(0))
    watch = DisconnectWatch(client.receive, task, after_s=0.01)
    await task
    watch.stop()
    client.leave()
    later = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_later(0.02, later.set_result, None)  # timers run in deadline order:
    await later  # the watch's own timer (0.01) would have run before this one
    assert (client.receives, watch.client_gone, task.cancelled()) == (0, False, False)
