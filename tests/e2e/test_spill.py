"""Capacity-aware routing end to end: a queueing engine fills, the excess spills, and traffic comes back."""

from __future__ import annotations

import json
import time
import urllib.request
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openai
import pytest

from gateway.serving.app import Gateway, Settings
from gateway.tools.standin import QueueingEngine, StandIn
from tests.conftest import Loop, upstream_spec, wait_for, write_policy

HOUR_MS = 3_600_000  # the lifespan's poller reads once at start; the tests drive every later reading


class Spill:
    """A gateway over a queueing engine `qwen` (cheap, self-hosted) and a stand-in `api` (dear, third party)."""

    def __init__(self, loop: Loop, folder: Path, slots: int = 2, max_waiting: int = 1, **capacity: Any) -> None:
        self.loop = loop
        self.engine = QueueingEngine("qwen", slots=slots, hold=True)
        self.api = StandIn("api")
        engine_url, api_url = loop.serve(self.engine).url, loop.serve(self.api).url
        spec = {"engine": "vllm", "max_waiting": max_waiting, "poll_ms": HOUR_MS, "stale_ms": 2 * HOUR_MS,
                **capacity}
        upstreams = {
            "qwen": upstream_spec(engine_url, "qwen-model", cost={"gpu_hour_usd": 2.0, "tokens_per_second": 2000},
                                  capacity=spec),
            "api": upstream_spec(api_url, "api-model", hosting="third_party", region="us",
                                 cost={"input_per_mtok": 3.0, "output_per_mtok": 15.0}),
        }
        self.audit = folder / "audit.jsonl"
        path = write_policy(folder, upstreams, {"chat": {"candidates": ["api", "qwen"], "objective": "cost"}},
                            data_classes={"public": {}, "personal": {"hosting": ["self"]}})
        self.path = path
        self.gateway = Gateway(Settings(policy=str(path), audit=(str(self.audit),), reload_interval_s=0.05))
        self.client = loop.client(loop.serve(self.gateway).url + "/v1")
        self.pool = ThreadPoolExecutor(16)
        wait_for(lambda: self.gateway.capacity.gauges["qwen"].reading is not None, what="the first reading")

    def poll(self) -> None:
        """One reading of the engine, now."""
        self.loop.run(self.gateway.capacity.poll_now())

    def send(self, data_class: str | None = None) -> Future[tuple[str, str | None]]:
        """Start one streamed request and wait until it reached an upstream; its future gives (upstream, spilled)."""
        before = self.engine.arrivals + len(self.api.seen)
        future = self.pool.submit(self._stream, data_class)
        wait_for(lambda: self.engine.arrivals + len(self.api.seen) > before or future.done(), what="arrival")
        return future

    def _stream(self, data_class: str | None) -> tuple[str, str | None]:
        headers = {"x-switchyard-data-class": data_class} if data_class else {}
        raw = self.client.chat.completions.with_raw_response.create(
            model="chat", messages=[{"role": "user", "content": "hi"}], stream=True, extra_headers=headers)
        text = "".join(chunk.choices[0].delta.content or "" for chunk in raw.parse() if chunk.choices)
        assert text.startswith(f"[{raw.headers['x-switchyard-upstream']}]")
        return raw.headers["x-switchyard-upstream"], raw.headers.get("x-switchyard-spilled-from")

    def fill(self) -> list[Future[tuple[str, str | None]]]:
        """Two requests in the slots and two waiting, read: the engine is full by its own reading."""
        held = [self.send(), self.send()]
        self.poll()
        held += [self.send(), self.send()]
        self.poll()
        assert self.engine.waiting == 2
        return held

    def release(self) -> None:
        self.loop.loop.call_soon_threadsafe(self.engine.release)

    def close(self) -> None:
        self.release()
        self.pool.shutdown(wait=True)


@pytest.fixture
def spill(loop: Loop, tmp_path: Path) -> Any:
    made = Spill(loop, tmp_path)
    yield made
    made.close()


def test_a_burst_fills_the_engine_spills_the_excess_and_comes_back(spill: Spill) -> None:
    first = [spill.send() for _ in range(2)]  # the two slots
    spill.poll()  # running 2, waiting 0
    queued = [spill.send() for _ in range(2)]  # waiting 0 + 1 sent is not over max_waiting 1; the next is
    spilled = [spill.send() for _ in range(3)]
    assert [f.result(timeout=10) for f in spilled] == [("api", "qwen")] * 3
    assert spill.engine.waiting == 2  # nothing spilled landed on the engine
    assert 'switchyard_upstream_full{upstream="qwen"} 1.0' in _metrics(spill)  # before any reading said so
    spill.poll()  # waiting 2 > 1: full on the reading itself
    assert spill.send().result(timeout=10) == ("api", "qwen")
    spill.release()
    assert [f.result(timeout=10) for f in first + queued] == [("qwen", None)] * 4
    wait_for(lambda: spill.engine.running == 0, what="the engine to drain")
    spill.poll()
    assert spill.send().result(timeout=10) == ("qwen", None)
    assert spill.engine.served == 5


def test_personal_data_bound_to_the_full_engine_still_goes_there_and_queues(spill: Spill) -> None:
    held = spill.fill()
    assert spill.gateway.capacity.full() == frozenset({"qwen"})
    personal = spill.send("personal")
    assert spill.engine.waiting == 3  # it queued at the full engine: no other upstream may take it
    assert spill.send().result(timeout=10) == ("api", "qwen")
    spill.release()
    assert personal.result(timeout=10) == ("qwen", None)
    assert [f.result(timeout=10) for f in held] == [("qwen", None)] * 4


def test_metrics_and_the_audit_record_show_the_spill(spill: Spill) -> None:
    spill.fill()
    assert spill.send().result(timeout=10) == ("api", "qwen")
    text = _metrics(spill)
    assert 'switchyard_upstream_full{upstream="qwen"} 1.0' in text
    assert 'switchyard_upstream_load{signal="waiting",upstream="qwen"} 2.0' in text
    assert 'switchyard_spills_total{from="qwen",route="chat",to="api"} 1.0' in text
    assert 'switchyard_spill_cost_usd_total{route="chat",tenant="acme"}' in text
    spill.release()
    wait_for(lambda: spill.audit.exists() and '"spilled_from":"qwen"' in spill.audit.read_text(), what="audit")
    record = next(json.loads(line) for line in spill.audit.read_text().splitlines()
                  if '"spilled_from":"qwen"' in line)
    assert record["upstream"] == "api"
    assert record["capacity"]["qwen"]["full"] is True
    assert record["capacity"]["qwen"]["waiting"] == 2


def _metrics(spill: Spill) -> str:
    url = spill.client.base_url.join("/metrics")
    with urllib.request.urlopen(str(url), timeout=10) as answer:
        return str(answer.read().decode())


def test_a_failed_poll_is_counted_and_when_unknown_full_spills(loop: Loop, tmp_path: Path) -> None:
    spill = Spill(loop, tmp_path, stale_ms=1000, poll_ms=50, when_unknown="full")
    try:
        spill.engine.metrics_status = 500
        wait_for(lambda: not spill.gateway.capacity.gauges["qwen"].fresh(time.monotonic()), what="stale")
        assert spill.send().result(timeout=10) == ("api", "qwen")
        wait_for(lambda: 'switchyard_capacity_poll_errors_total{upstream="qwen"}' in _metrics(spill), what="errors")
        spill.engine.metrics_status = 200
        wait_for(lambda: spill.gateway.capacity.full() == frozenset(), what="a fresh reading")
        spill.release()
        assert spill.send().result(timeout=10) == ("qwen", None)
    finally:
        spill.close()


def test_the_client_cannot_choose_a_full_upstream_or_skip_the_spill(spill: Spill) -> None:
    spill.fill()
    raw = spill.client.chat.completions.with_raw_response.create(
        model="chat", messages=[{"role": "user", "content": "hi"}],
        extra_headers={"x-switchyard-upstream": "qwen", "x-switchyard-spilled-from": "none"})
    assert raw.headers["x-switchyard-upstream"] == "api"
    assert raw.headers["x-switchyard-spilled-from"] == "qwen"
    with pytest.raises(openai.APIStatusError):
        spill.client.chat.completions.create(model="qwen", messages=[{"role": "user", "content": "hi"}])


def test_a_reload_restarts_the_pollers_with_the_new_thresholds(loop: Loop, tmp_path: Path) -> None:
    spill = Spill(loop, tmp_path, poll_ms=50, stale_ms=5000)
    try:
        old = spill.gateway.capacity.tasks
        spill.path.write_text(spill.path.read_text().replace("max_waiting: 1", "max_waiting: 7"))
        wait_for(lambda: spill.gateway.capacity.gauges["qwen"].spec.max_waiting == 7, what="the reload")
        wait_for(lambda: all(task.done() for task in old), what="the old pollers to end")
        gauge = spill.gateway.capacity.gauges["qwen"]
        seen = gauge.read_at
        wait_for(lambda: gauge.read_at > seen, what="a reading by the new poller")
    finally:
        spill.close()
