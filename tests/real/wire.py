"""Reading answers the way a client sees them, and comparing the gateway's with vLLM's own: shapes, never text."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import orjson


def shape(value: Any) -> Any:
    """The structure of a JSON value: keys and types, no contents (lists keep their length)."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in sorted(value.items())}
    if isinstance(value, list):
        return [shape(item) for item in value]
    return type(value).__name__


@dataclass
class Events:
    """One SSE stream as it arrived: each data payload, whether [DONE] ended it, and the raw bytes."""

    payloads: list[dict[str, Any]]
    done: bool
    raw: bytes
    status: int
    headers: httpx.Headers

    @property
    def usage(self) -> dict[str, Any] | None:
        found = [p["usage"] for p in self.payloads if p.get("usage")]
        assert len(found) <= 1, f"more than one usage event: {found}"
        return found[0] if found else None

    @property
    def errors(self) -> list[dict[str, Any]]:
        return [p["error"] for p in self.payloads if "error" in p]

    def keys(self) -> list[tuple[str, ...]]:
        """The top-level keys of each event, in order."""
        return [tuple(sorted(p)) for p in self.payloads]


def parse_sse(raw: bytes) -> tuple[list[dict[str, Any]], bool]:
    """Every data payload of a stream, and whether it ended with [DONE]."""
    payloads, done = [], False
    for event in raw.split(b"\n\n"):
        data = b"".join(line[5:].strip() for line in event.split(b"\n") if line.startswith(b"data:"))
        if not data:
            continue
        assert not done, "an event after [DONE]"
        if data == b"[DONE]":
            done = True
        else:
            payloads.append(orjson.loads(data))
    return payloads, done


@contextmanager
def streaming(create: Callable[..., Any], **body: Any) -> Iterator[Any]:
    """An SDK call with stream=True as raw bytes: with_streaming_response keeps the wire as it came."""
    with create(stream=True, **body) as response:
        yield response


def read_stream(create: Callable[..., Any], **body: Any) -> Events:
    """Stream a request through the SDK and keep every event."""
    with streaming(create, **body) as response:
        raw = b"".join(response.iter_bytes())
        payloads, done = parse_sse(raw)
        return Events(payloads, done, raw, response.status_code, response.headers)


def error_of(call: Callable[..., Any], **body: Any) -> openai.APIStatusError:
    """The SDK's error for a request that must be refused."""
    try:
        call(**body)
    except openai.APIStatusError as exc:
        return exc
    raise AssertionError("the request was not refused")


def error_body(exc: openai.APIStatusError) -> dict[str, Any]:
    """The error object of a refused request, as the server sent it."""
    body = exc.response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    return error


METRIC = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$", re.M)


def metric(url: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples on a Prometheus /metrics page, over the series matching labels."""
    text = httpx.get(url + "/metrics", timeout=10).text
    total = 0.0
    for match in METRIC.finditer(text):
        if match["name"] != name:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', match["labels"] or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(match["value"])
    return total


def poll(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll predicate until it holds, failing at the deadline."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)
