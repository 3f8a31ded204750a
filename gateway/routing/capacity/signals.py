"""Read an engine's load from its Prometheus text: waiting and running requests, and KV cache use."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Signals:
    """Which metrics of an engine hold its queue, its running requests and its KV cache use (first found wins)."""

    waiting: tuple[str, ...]
    running: tuple[str, ...]
    kv_cache: tuple[str, ...]


ENGINES: Mapping[str, Signals] = {
    "vllm": Signals(("vllm:num_requests_waiting",), ("vllm:num_requests_running",),
                    ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")),
    "sglang": Signals(("sglang:num_queue_reqs",), ("sglang:num_running_reqs",), ("sglang:token_usage",)),
    "llamacpp": Signals(("llamacpp:requests_deferred",), ("llamacpp:requests_processing",), ()),
}


@dataclass(frozen=True, slots=True)
class Reading:
    """An engine's load at one moment: queues summed over its series, the cache maxed (None when not reported)."""

    waiting: float
    running: float
    kv_cache: float | None


class NotAReading(ValueError):
    """The text holds no queue metric of the engine named: the wrong engine, or not a metrics page."""


def parse(engine: str, text: str) -> Reading:
    """The reading in an engine's /metrics text; NotAReading when its queue metric is missing."""
    signals = ENGINES[engine]
    wanted = {*signals.waiting, *signals.running, *signals.kv_cache}
    found: dict[str, list[float]] = {}
    for name, value in samples(text, wanted):
        found.setdefault(name, []).append(value)
    waiting = _first(signals.waiting, found)
    if waiting is None:
        raise NotAReading(f"no {' or '.join(signals.waiting)} in the metrics: is this a {engine} server?")
    running = _first(signals.running, found) or []
    cache = _first(signals.kv_cache, found)
    reading = Reading(sum(waiting), sum(running), max(cache) if cache else None)
    if not (math.isfinite(reading.waiting) and math.isfinite(reading.running)):
        raise NotAReading("the queue metrics sum past any number: not an engine's counts")
    return reading


def _first(names: tuple[str, ...], found: Mapping[str, list[float]]) -> list[float] | None:
    for name in names:
        if name in found:
            return found[name]
    return None


def samples(text: str, wanted: set[str]) -> Iterator[tuple[str, float]]:
    """(metric name, value) of every sample line in text whose name is wanted; malformed, non-finite and
    negative samples are skipped."""
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        brace = line.find("{")
        name = line[:brace] if brace >= 0 else line.split(" ", 1)[0]
        if name not in wanted:
            continue
        rest = line[line.rfind("}") + 1:] if brace >= 0 else line[len(name):]
        fields = rest.split()
        if not fields:
            continue
        try:
            value = float(fields[0])
        except ValueError:
            continue
        if math.isfinite(value) and value >= 0:  # a queue or a cache is never less than empty
            yield name, value
