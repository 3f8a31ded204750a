"""A policy's capacity gauges: polled from a real engine's /metrics, the full set decisions read, and load maps."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from gateway.operations.metrics import Metrics
from gateway.routing.capacity.state import NONE_FULL, Capacity, full_from_loads
from gateway.routing.policy.loader import load_policy
from gateway.routing.policy.model import Policy
from gateway.tools.standin import QueueingEngine
from tests.conftest import KEY, Loop, key_hash

HOUR_MS = 3_600_000  # the pollers read once when started; the tests drive every later reading

POLICY = f"""\
version: 1
upstreams:
  qwen:
    base_url: http://127.0.0.1:9/v1
    model: qwen
    hosting: self
    region: eu-west
    cost: {{gpu_hour_usd: 4.0, tokens_per_second: 2500}}
    capacity: {{engine: vllm, max_waiting: 2, poll_ms: {HOUR_MS}, stale_ms: {2 * HOUR_MS}, metrics_url: "URL"}}
  gpt:
    base_url: https://api.example.com/v1
    model: gpt
    region: us
    cost: {{input_per_mtok: 2.5, output_per_mtok: 10}}
models:
  chat: {{candidates: [qwen, gpt]}}
tenants:
  acme: {{keys: ["{key_hash(KEY)}"]}}
"""


def policy(tmp_path: Path, url: str = "http://127.0.0.1:9/metrics") -> Policy:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY.replace("URL", url))
    return load_policy(path)


class Polled:
    """A Capacity polling a queueing engine on loopback, driven from the test thread."""

    def __init__(self, loop: Loop, tmp_path: Path) -> None:
        self.loop = loop
        self.engine = QueueingEngine("qwen", slots=1)
        self.policy = policy(tmp_path, loop.serve(self.engine).url + "/metrics")
        self.metrics = Metrics()
        self.capacity = Capacity(self.metrics)
        self.session: aiohttp.ClientSession = loop.run(self._open())

    async def _open(self) -> aiohttp.ClientSession:
        session = aiohttp.ClientSession()
        self.capacity.start(self.policy, session)
        return session

    def read(self, waiting: int) -> frozenset[str]:
        """The full set after the engine shows waiting requests and is read."""
        self.engine.waiting = waiting
        self.loop.run(self.capacity.poll_now())
        return self.capacity.full()

    def close(self) -> None:
        self.loop.run(self.capacity.close())
        self.loop.run(self.session.close())


@pytest.fixture
def polled(loop: Loop, tmp_path: Path) -> Iterator[Polled]:
    made = Polled(loop, tmp_path)
    yield made
    made.close()


def test_only_upstreams_with_a_capacity_block_get_a_gauge_and_a_poller(polled: Polled) -> None:
    assert set(polled.capacity.gauges) == set(polled.capacity.pollers) == {"qwen"}
    assert polled.capacity.view("gpt") is None
    polled.capacity.sent("gpt")  # no gauge, no effect
    assert polled.read(0) == NONE_FULL


def test_a_queue_past_max_waiting_is_full_until_a_reading_shows_it_shorter(polled: Polled) -> None:
    assert polled.read(5) == {"qwen"}
    assert polled.capacity.full() is polled.capacity.full()  # the same set while nothing changed
    assert b'switchyard_upstream_full{upstream="qwen"} 1.0' in polled.metrics.exposition()
    view = polled.capacity.view("qwen")
    assert view is not None
    assert view.full
    assert view.reading is not None
    assert view.reading.waiting == 5
    assert polled.read(0) == NONE_FULL
    assert b'switchyard_upstream_full{upstream="qwen"} 0.0' in polled.metrics.exposition()


def test_requests_sent_since_the_reading_count_toward_the_queue(polled: Polled) -> None:
    assert polled.read(2) == NONE_FULL
    polled.capacity.sent("qwen")
    assert polled.capacity.full() == {"qwen"}


def test_a_restart_with_the_same_block_keeps_the_gauge_and_its_reading(polled: Polled) -> None:
    polled.read(5)
    gauge = polled.capacity.gauges["qwen"]
    polled.loop.run(_restart(polled))
    assert polled.capacity.gauges["qwen"] is gauge
    assert polled.capacity.full() == {"qwen"}


async def _restart(polled: Polled) -> None:
    polled.capacity.start(polled.policy, polled.session)


def test_without_a_capacity_block_nothing_is_ever_full() -> None:
    assert Capacity(Metrics()).full() is NONE_FULL


@pytest.mark.parametrize(("loads", "full"), [
    ({"qwen": "full"}, {"qwen"}),
    ({"qwen": "open", "gpt": "full"}, {"gpt"}),
    ({"qwen": 3}, {"qwen"}),
    ({"qwen": "2"}, set()),
    ({}, set()),
])
def test_a_load_map_gives_the_full_set(tmp_path: Path, loads: dict[str, str | float], full: set[str]) -> None:
    assert full_from_loads(policy(tmp_path), loads) == full


@pytest.mark.parametrize(("loads", "says"), [
    ({"llama": "full"}, "load: upstream 'llama' is not in the policy"),
    ({"gpt": 3}, "load: gpt=3: a queue length needs capacity.max_waiting on gpt; give full or open"),
    ({"qwen": "busy"}, "load: qwen=busy: give full, open or a queue length"),
])
def test_a_bad_load_map_is_refused_naming_the_entry(tmp_path: Path, loads: dict[str, str | float], says: str) -> None:
    with pytest.raises(ValueError, match="^" + says.replace(".", r"\.") + "$"):
        full_from_loads(policy(tmp_path), loads)
