"""The Messages API keeps secrets: a provider key never reaches a client, a log line or a metric label, whatever
an upstream echoes; the client's own key never reaches an upstream; Anthropic's version headers reach only Anthropic.

Hostile fake Anthropic servers (`kind: anthropic`, the key sent in `x-api-key`) echo the key they were sent, in
each form of gateway/tools/standin/hostile.py's ECHOES, in an Anthropic-shaped error, an OpenAI-shaped one, a
message, a stream's text and a response header. The gateway runs in this process over loopback, so its log
records are caught as they are made.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest

from gateway.asgi import Receive, Scope, Send, header_map
from gateway.serving.app import Gateway, Settings
from gateway.tools.standin import StandIn
from gateway.tools.standin.hostile import ECHOES
from gateway.tools.standin.messages import MessagesStandIn
from tests.conftest import KEY, Loop, Served, upstream_spec, write_policy

PROVIDER_KEY = "sk-ant-api03-Xy7Qw2Er9Ty4Ui1Op8As5Df3Gh6Jk0Lz-Hostile"
MODES = ("anthropic error", "openai error", "message", "stream", "header")
HELLO = [{"role": "user", "content": "Say hello."}]


@dataclass
class Echoing:
    """A fake Anthropic server that answers with the key it was sent, in the mode and form the test sets."""

    mode: str = "message"
    form: str = "as-is"
    seen: list[dict[str, str]] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        headers = header_map(scope)
        self.seen.append(headers)
        echo = ECHOES[self.form](headers.get("x-api-key", ""))
        status, extra, body = 200, [(b"content-type", b"application/json")], b""
        if self.mode == "anthropic error":
            status, body = 401, orjson.dumps({"type": "error", "error": {"type": "authentication_error",
                                                                         "message": f"invalid x-api-key {echo}"}})
        elif self.mode == "openai error":
            status, body = 400, orjson.dumps({"error": {"message": f"bad key {echo}", "type": "invalid_request"}})
        elif self.mode == "stream":
            extra = [(b"content-type", b"text/event-stream")]
            body = b"".join(b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **data}) + b"\n\n"
                            for kind, data in stream_events(echo))
        else:
            body = orjson.dumps(message(f"your key is {echo}"))
            if self.mode == "header":
                extra.append((b"x-upstream-key", echo.encode("latin-1", "replace")))
        await send({"type": "http.response.start", "status": status, "headers": extra})
        await send({"type": "http.response.body", "body": body})


def message(text: str) -> dict[str, Any]:
    return {"id": "msg_1", "type": "message", "role": "assistant", "model": "m", "content": [
        {"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": 3, "output_tokens": 2}}


def stream_events(echo: str) -> list[tuple[str, dict[str, Any]]]:
    start = {**message(""), "content": [], "stop_reason": None}
    return [("message_start", {"message": start}),
            ("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
            ("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": f"key {echo}"}}),
            ("content_block_stop", {"index": 0}),
            ("message_delta", {"delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 2}}),
            ("message_stop", {})]


@dataclass
class Rig:
    """The gateway, the echoing Anthropic server, and the well-behaved upstreams."""

    gateway: Gateway
    served: Served
    echoing: Echoing
    keyless: MessagesStandIn
    native: MessagesStandIn
    chatty: StandIn


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    loop = Loop()
    echoing, keyless, native, chatty = Echoing(), MessagesStandIn("keyless"), MessagesStandIn("native"), StandIn("c")
    anthropic = {"kind": "anthropic", "region": "us", "hosting": "third_party", "model": "claude-model",
                 "cost": {"input_per_mtok": 3.0, "output_per_mtok": 15.0}}
    specs = {"echoing": {**anthropic, "base_url": loop.serve(echoing).url + "/v1", "api_key": PROVIDER_KEY},
             "keyless": {**anthropic, "base_url": loop.serve(keyless).url + "/v1"},
             "native": upstream_spec(loop.serve(native).url, "native-model", api_key=PROVIDER_KEY,
                                     capabilities=["tools", "json", "vision", "messages"]),
             "chatty": upstream_spec(loop.serve(chatty).url, "chatty-model", api_key=PROVIDER_KEY)}
    path = write_policy(tmp_path_factory.mktemp("secrets-messages"), specs,
                        {name: {"candidates": [name]} for name in specs})
    gateway = Gateway(Settings(policy=str(path)))
    yield Rig(gateway, loop.serve(gateway), echoing, keyless, native, chatty)
    loop.close()


def post(rig: Rig, route: str, stream: bool = False, headers: dict[str, str] | None = None) -> httpx.Response:
    body = {"model": route, "max_tokens": 16, "messages": HELLO, "stream": stream}
    return httpx.post(rig.served.url + "/v1/messages", content=orjson.dumps(body), timeout=30,
                      headers={"x-api-key": KEY, "content-type": "application/json", **(headers or {})})


@pytest.mark.parametrize("form", ECHOES)
@pytest.mark.parametrize("mode", MODES)
def test_an_echoed_provider_key_reaches_no_client_log_or_metric(rig: Rig, mode: str, form: str,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    rig.echoing.mode, rig.echoing.form = mode, form
    caplog.set_level(logging.DEBUG)
    response = post(rig, "echoing", stream=mode == "stream")
    assert rig.echoing.seen[-1]["x-api-key"] == PROVIDER_KEY  # the attack ran: the key was sent and echoed
    assert response.status_code == (200 if mode in ("message", "stream", "header") else  # the provider refusing
                                     502 if mode == "anthropic error" else 400)  # the key is no client's fault
    answer = response.content.decode("latin-1") + " ".join(f"{k}: {v}" for k, v in response.headers.items())
    logged = "\n".join(record.getMessage() + repr(record.__dict__) for record in caplog.records)
    metrics = httpx.get(rig.served.url + "/metrics", timeout=10).text
    echoed = ECHOES[form](PROVIDER_KEY).strip(".")
    for place, text in (("answer", answer), ("log", logged), ("metrics", metrics)):
        assert echoed not in text, place
        assert PROVIDER_KEY[8:-8] not in text, place


def test_the_clients_key_never_reaches_an_upstream(rig: Rig) -> None:
    """A keyless Anthropic upstream gets no x-api-key at all: never the gateway key the client sent."""
    for route, app in (("keyless", rig.keyless), ("native", rig.native)):
        assert post(rig, route).status_code == 200
        sent = app.seen[-1].headers
        assert KEY not in orjson.dumps(sent).decode(), route
    assert post(rig, "chatty", headers={"authorization": f"Bearer {KEY}"}).status_code == 200
    assert KEY not in orjson.dumps(rig.chatty.seen[-1].headers).decode()


@pytest.mark.parametrize("route", ["native", "chatty"])
def test_anthropics_version_headers_reach_no_other_upstream(rig: Rig, route: str) -> None:
    version = {"anthropic-version": "2023-06-01", "anthropic-beta": "prompt-caching-2024-07-31"}
    assert post(rig, route, headers=version).status_code == 200
    app = rig.native if route == "native" else rig.chatty
    assert not {"anthropic-version", "anthropic-beta"} & app.seen[-1].headers.keys()
    assert post(rig, "keyless", headers=version).status_code == 200
    assert {k: rig.keyless.seen[-1].headers[k] for k in version} == version


@pytest.mark.parametrize("header", ["x-switchyard-upstream", "host", "x-forwarded-host", "anthropic-base-url",
                                    "x-upstream-url", "forwarded"])
def test_a_client_cannot_choose_the_upstream_url(rig: Rig, header: str) -> None:
    """Headers and body fields naming another server are not followed: the route's upstream answers, and only it."""
    before = len(rig.native.seen)
    body = {"model": "chatty", "max_tokens": 8, "messages": HELLO, "base_url": rig.served.url, "api_base":
            rig.served.url, "api_key": "sk-client", "extra_headers": {"x-api-key": "sk-client"}}
    response = httpx.post(rig.served.url + "/v1/messages", content=orjson.dumps(body), timeout=30, headers={
        "x-api-key": KEY, "content-type": "application/json",
        header: "127.0.0.1:" + rig.served.url.rsplit(":", 1)[1] if header == "host" else "native"})
    assert response.status_code == 200, response.text
    assert response.headers["x-switchyard-upstream"] == "chatty"
    assert len(rig.native.seen) == before
    sent = rig.chatty.seen[-1]
    assert "sk-client" not in orjson.dumps(sent.headers).decode()
    assert not {"base_url", "api_base", "api_key", "extra_headers"} & sent.body.keys()
