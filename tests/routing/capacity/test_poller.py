"""A capacity poller against hostile /metrics pages: redirects, compression, trickled and oversized pages."""

from __future__ import annotations

import asyncio
import gzip
from pathlib import Path
from typing import Any

from starlette.types import Receive, Scope, Send

from gateway.routing.capacity.poller import MAX_BYTES
from gateway.routing.capacity.signals import Reading
from gateway.serving.app import Gateway, Settings
from tests.conftest import Loop, upstream_spec, write_policy

HOUR_MS = 3_600_000
PAGE = b"# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting 12\nvllm:num_requests_running 3\n"
SERIES = 60_000  # a page of about 3 MiB: under the size limit, read off the event loop


async def _start(send: Send, status: int = 200, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; version=0.0.4"), *headers]})


class Engine:
    """A /metrics server whose page is served the way `mode` says."""

    def __init__(self, mode: str, elsewhere: str = "") -> None:
        self.mode = mode
        self.elsewhere = elsewhere
        self.accept_encoding: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        headers = dict(scope["headers"])
        self.accept_encoding.append(headers.get(b"accept-encoding", b"").decode())
        await getattr(self, self.mode)(headers, send)

    async def redirect(self, headers: dict[bytes, bytes], send: Send) -> None:
        await _start(send, 302, ((b"location", self.elsewhere.encode()),))
        await send({"type": "http.response.body", "body": b""})

    async def gzip_when_asked(self, headers: dict[bytes, bytes], send: Send) -> None:
        # what prometheus_client (behind vLLM's /metrics) does when the client accepts gzip
        if b"gzip" in headers.get(b"accept-encoding", b""):
            await _start(send, 200, ((b"content-encoding", b"gzip"),))
            await send({"type": "http.response.body", "body": gzip.compress(PAGE)})
            return
        await _start(send)
        await send({"type": "http.response.body", "body": PAGE})

    async def trickled(self, headers: dict[bytes, bytes], send: Send) -> None:
        await _start(send)
        cut = PAGE.index(b"12\n") + 1  # the queue's "12" is split across two writes
        await send({"type": "http.response.body", "body": PAGE[:cut], "more_body": True})
        await asyncio.sleep(0.1)  # the attack: the rest of the page comes later
        await send({"type": "http.response.body", "body": PAGE[cut:]})

    async def oversized(self, headers: dict[bytes, bytes], send: Send) -> None:
        await _start(send)
        padding = b"# " + b"x" * 1022 + b"\n"
        for _ in range(MAX_BYTES // len(padding)):
            await send({"type": "http.response.body", "body": padding, "more_body": True})
        await send({"type": "http.response.body", "body": b"vllm:num_requests_waiting 0\n"})


    async def many_series(self, headers: dict[bytes, bytes], send: Send) -> None:
        await _start(send)
        page = "".join(f'vllm:num_requests_waiting{{model_name="m{n}"}} 1\n' for n in range(SERIES))
        await send({"type": "http.response.body", "body": (page + "vllm:num_requests_waiting{x=\"y\"} NaN\n"
                                                            "vllm:num_requests_waiting{x=\"z\"} -1\n").encode()})


def _gateway(loop: Loop, folder: Path, engine: Engine) -> Gateway:
    url = loop.serve(engine).url
    capacity: dict[str, Any] = {"engine": "vllm", "max_waiting": 4, "poll_ms": HOUR_MS, "stale_ms": 2 * HOUR_MS,
                                "metrics_url": url + "/metrics"}
    upstreams = {"qwen": upstream_spec(url, "qwen-model", capacity=capacity)}
    path = write_policy(folder, upstreams, {"chat": {"candidates": ["qwen"]}})
    gateway = Gateway(Settings(policy=str(path), audit=(str(folder / "audit.jsonl"),)))
    loop.serve(gateway)
    return gateway


def _reading(loop: Loop, gateway: Gateway) -> Reading | None:
    loop.run(gateway.capacity.poll_now())
    return gateway.capacity.gauges["qwen"].reading


def test_a_redirecting_metrics_page_is_not_followed(loop: Loop, tmp_path: Path) -> None:
    elsewhere = Engine("gzip_when_asked")
    elsewhere_url = loop.serve(elsewhere).url
    engine = Engine("redirect", elsewhere=elsewhere_url + "/metrics")
    gateway = _gateway(loop, tmp_path, engine)
    assert _reading(loop, gateway) is None
    assert elsewhere.accept_encoding == []


def test_a_page_compressed_when_the_poller_accepts_it_still_reads(loop: Loop, tmp_path: Path) -> None:
    gateway = _gateway(loop, tmp_path, Engine("gzip_when_asked"))
    assert _reading(loop, gateway) == Reading(12, 3, None)


def test_a_page_that_arrives_in_pieces_is_read_whole(loop: Loop, tmp_path: Path) -> None:
    gateway = _gateway(loop, tmp_path, Engine("trickled"))
    assert _reading(loop, gateway) == Reading(12, 3, None)


def test_a_page_past_the_size_limit_is_no_reading_not_a_truncated_one(loop: Loop, tmp_path: Path) -> None:
    gateway = _gateway(loop, tmp_path, Engine("oversized"))
    assert _reading(loop, gateway) is None
    assert gateway.capacity.gauges["qwen"].failures >= 1


def test_a_page_of_60000_series_reads_with_nan_and_negative_samples_skipped(loop: Loop, tmp_path: Path) -> None:
    gateway = _gateway(loop, tmp_path, Engine("many_series"))
    assert _reading(loop, gateway) == Reading(SERIES, 0, None)
