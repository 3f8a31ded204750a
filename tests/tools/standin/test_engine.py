"""The queueing engine: a slot at a time, the rest waiting, and its queue on /metrics in each engine's format."""

from __future__ import annotations

import threading

import httpx
import pytest

from gateway.tools.standin import QueueingEngine
from tests.conftest import Loop, wait_for

HELLO = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(("engine", "line"), [
    ("vllm", 'vllm:num_requests_waiting{engine="0",model_name="standin"} 3.0'),
    ("sglang", 'sglang:num_queue_reqs{engine_type="unified",model_name="standin",tp_rank="0"} 3.0'),
    ("llamacpp", "llamacpp:requests_deferred 3"),
])
def test_the_metrics_page_shows_the_queue_in_the_engines_format(engine: str, line: str) -> None:
    standin = QueueingEngine("e", slots=2, engine=engine)
    standin.waiting, standin.running = 3, 1
    assert line in standin.metrics_text()


def test_a_held_engine_runs_slots_requests_and_queues_the_rest_until_released(loop: Loop) -> None:
    engine = QueueingEngine("e", slots=1, hold=True)
    url = loop.serve(engine).url
    answers: list[int] = []
    posts = [threading.Thread(target=lambda: answers.append(
        httpx.post(url + "/v1/chat/completions", json=HELLO, timeout=30).status_code)) for _ in range(2)]
    for thread in posts:
        thread.start()
    wait_for(lambda: (engine.running, engine.waiting) == (1, 1), what="one running and one waiting")
    page = httpx.get(url + "/metrics", timeout=10).text
    assert 'vllm:num_requests_running{engine="0",model_name="standin"} 1.0' in page
    loop.loop.call_soon_threadsafe(engine.release)
    for thread in posts:
        thread.join(timeout=30)
    assert answers == [200, 200]
    assert (engine.arrivals, engine.served, engine.running, engine.waiting) == (2, 2, 0, 0)
