"""A hostile translated upstream (through the litellm adapter): its echoed key is cut out by the dispatcher's
redaction, its redirects are never followed, and its answers are read only within the upstream's limits."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from gateway.serving.app import Gateway, Settings
from gateway.tools.standin import FakeAnthropic, Fault, FaultServer, Flood, Redirect
from gateway.tools.standin.hostile import MIB, gzip_bomb
from tests.conftest import KEY, Loop, write_policy
from tests.leaks import leaks
from tests.upstreams.test_litellm_adapter import anthropic_spec

PROVIDER_KEY = "sk-ant-echo-5f4e3d2c1b0a99887766-5544"
AUTH = {"authorization": f"Bearer {KEY}"}


def serve(loop: Loop, tmp_path: Path) -> tuple[FakeAnthropic, str]:
    fake = FakeAnthropic(f"key {PROVIDER_KEY.upper()} and {PROVIDER_KEY}")  # the label is in every answer
    spec = anthropic_spec(loop.serve(fake).url, api_key=PROVIDER_KEY)
    path = write_policy(tmp_path, {"anthropic": spec}, {"chat": {"candidates": ["anthropic"]}})
    return fake, loop.serve(Gateway(Settings(policy=str(path)))).url


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_a_translated_answer_echoing_the_key_is_redacted(loop: Loop, tmp_path: Path, stream: bool) -> None:
    fake, url = serve(loop, tmp_path)
    response = httpx.post(url + "/v1/chat/completions", headers=AUTH, timeout=30,
                          json={"model": "chat", "messages": [{"role": "user", "content": "hi"}], "stream": stream})
    assert response.status_code == 200
    assert fake.seen[-1].headers["x-api-key"] == PROVIDER_KEY
    assert leaks(response.content, PROVIDER_KEY) == []
    assert b"[redacted]" in response.content


def test_a_translated_error_echoing_the_key_is_redacted(loop: Loop, tmp_path: Path) -> None:
    fake, url = serve(loop, tmp_path)
    fake.faults.append(Fault(status=400, message=f"invalid x-api-key {PROVIDER_KEY[:12]}..."))
    response = httpx.post(url + "/v1/chat/completions", headers=AUTH, timeout=30,
                          json={"model": "chat", "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 400
    assert leaks(response.content, PROVIDER_KEY) == []
    assert b"[redacted]" in response.content


# -- a hostile translated upstream: redirects and floods, read through litellm's HTTP client --------------------

LIMITS = {"body_bytes": MIB, "decompressed_bytes": 2 * MIB, "error_body_bytes": 4096, "sse_event_bytes": 64 << 10}
HOSTILE = ("redirect", "elsewhere", "flood")


@dataclass
class Translated:
    """A gateway in front of fault servers that the policy names as Anthropic upstreams (route = upstream name)."""

    client: openai.OpenAI
    url: str
    servers: dict[str, FaultServer]

    def fails(self, route: str, **extra: Any) -> tuple[int, str]:
        """The status and message of the error a request to route ends in."""
        with pytest.raises(openai.APIStatusError) as caught:
            self.client.chat.completions.create(model=route, messages=[{"role": "user", "content": "hi"}], **extra)
        return caught.value.status_code, caught.value.response.json()["error"]["message"]


@pytest.fixture
def translated(loop: Loop, tmp_path: Path) -> Iterator[Translated]:
    servers = {name: FaultServer(name) for name in HOSTILE}
    for server in servers.values():
        loop.run(server.start())
    specs = {name: anthropic_spec(server.url, limits=LIMITS) for name, server in servers.items()}
    path = write_policy(tmp_path, specs, {name: {"candidates": [name]} for name in HOSTILE},
                        resilience={"attempts_per_upstream": 2})
    try:
        url = loop.serve(Gateway(Settings(policy=str(path)))).url
        yield Translated(loop.client(url + "/v1"), url, servers)
    finally:
        for server in servers.values():
            loop.run(server.stop())


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("status", [307, 302])
def test_a_translated_redirect_is_an_upstream_error_and_nothing_reaches_its_location(translated: Translated,
                                                                                     status: int, stream: bool) -> None:
    elsewhere = translated.servers["elsewhere"]
    translated.servers["redirect"].script.append(Redirect(status, elsewhere.url + "/v1/messages"))
    status, message = translated.fails("redirect", stream=stream)
    assert status == 502
    assert "redirect: redirect" in message
    assert translated.servers["redirect"].count == 1  # a redirect is not asked again
    assert elsewhere.count == 0
    metrics = httpx.get(translated.url + "/metrics").text
    assert 'switchyard_upstream_errors_total{reason="redirect",upstream="redirect"} 1.0' in metrics


def test_a_translated_body_over_the_limit_fails_the_attempt(translated: Translated) -> None:
    flood = translated.servers["flood"]
    flood.script.append(Flood(64 * MIB, head=b'{"id": "msg_1", "type": "message", "pad": "'))
    status, message = translated.fails("flood")
    assert status == 502
    assert "flood: body_too_large" in message
    assert flood.arrivals[-1].sent < 16 * MIB


def test_a_translated_content_length_over_the_limit_is_refused_before_reading(translated: Translated) -> None:
    flood = translated.servers["flood"]
    flood.script.append(Flood(64 * MIB, chunked=False))
    status, message = translated.fails("flood")
    assert status == 502
    assert "flood: body_too_large" in message
    assert flood.arrivals[-1].sent < 16 * MIB


def test_a_translated_gzip_bomb_fails_at_the_decompressed_limit(translated: Translated) -> None:
    bomb = gzip_bomb()  # 1 MB that inflates to 1 GiB; under the wire limit, so only inflating can find it out
    translated.servers["flood"].script.append(Flood(len(bomb) // 2, head=bomb[:len(bomb) // 2], encoding="gzip"))
    status, message = translated.fails("flood")
    assert status == 502
    assert "flood: decompressed_body_too_large" in message


def test_a_translated_stream_event_over_the_event_limit_fails_the_attempt(translated: Translated) -> None:
    flood = translated.servers["flood"]
    head = b'event: content_block_delta\ndata: {"type": "content_block_delta", "delta": {"text": "'
    flood.script.append(Flood(64 * MIB, content_type="text/event-stream", head=head))
    status, message = translated.fails("flood", stream=True)
    assert status == 502
    assert "flood: event_too_large" in message
    assert flood.arrivals[-1].sent < 16 * MIB


def test_a_translated_error_body_is_read_only_to_its_limit(translated: Translated) -> None:
    flood = translated.servers["flood"]
    flood.script.append(Flood(64 * MIB, status=400, head=b'{"type": "error", "error": {"message": "too long: '))
    status, message = translated.fails("flood")
    assert status == 400
    assert len(message) <= LIMITS["error_body_bytes"]
    assert flood.arrivals[-1].sent < 16 * MIB
