"""The Messages API end to end: the official anthropic SDK against the gateway, upstreams real servers on loopback.

Three deliveries: `claude` (kind anthropic) and `native` (an OpenAI-compatible server declaring `messages`, as
vLLM does) get the request as it came, from a fake Anthropic server; `chatty`, an OpenAI-compatible stand-in,
gets it translated to chat completions. Answers are compared with what the same request gets from the upstream
directly.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import httpx
import orjson
import pytest

from gateway.serving.app import Gateway, Settings
from gateway.tools.messages_standin import MessagesFault, MessagesStandIn
from gateway.tools.standin import StandIn
from tests.conftest import KEY, OTHER_KEY, Loop, Served, upstream_spec, wait_for, write_policy

UPSTREAM_KEY = "sk-ant-api03-Zq8xKv1Lw9Tr4Yb7Nc2Hd5Jf0Gm3Ps6"
HELLO: list[Any] = [{"role": "user", "content": "Say hello."}]
WEATHER = {"name": "weather", "description": "The weather in a city.",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


@dataclass
class Messages:
    """The gateway, its three upstreams, and clients for it."""

    loop: Loop
    gateway: Gateway
    served: Served
    claude: MessagesStandIn
    native: MessagesStandIn
    chatty: StandIn
    claude_url: str
    clients: list[Any]

    def client(self, key: str = KEY, **options: Any) -> anthropic.Anthropic:
        made = anthropic.Anthropic(base_url=self.served.url, api_key=key, max_retries=0, **options)
        self.clients.append(made)
        return made

    def async_client(self, key: str = KEY) -> anthropic.AsyncAnthropic:
        return anthropic.AsyncAnthropic(base_url=self.served.url, api_key=key, max_retries=0)

    def direct(self) -> anthropic.Anthropic:
        """A client straight to the fake Anthropic server, as the gateway's own key."""
        made = anthropic.Anthropic(base_url=self.claude_url, api_key=None, auth_token=None,
                                   default_headers={"x-api-key": UPSTREAM_KEY}, max_retries=0)
        self.clients.append(made)
        return made


def start(loop: Loop, folder: Path, **sections: Any) -> Messages:
    claude, native, chatty = MessagesStandIn("claude", key=UPSTREAM_KEY), MessagesStandIn("native"), StandIn("chatty")
    claude_url = loop.serve(claude).url
    upstreams = {
        "claude": {"kind": "anthropic", "base_url": claude_url + "/v1", "model": "claude-upstream-model",
                   "api_key": UPSTREAM_KEY, "region": "us", "hosting": "third_party",
                   "cost": {"input_per_mtok": 3.0, "output_per_mtok": 15.0}},
        "native": upstream_spec(loop.serve(native).url, "native-model",
                                capabilities=["tools", "json", "vision", "messages"]),
        "chatty": upstream_spec(loop.serve(chatty).url, "chatty-model"),
    }
    models = {"claude-sonnet-4-5": {"candidates": ["claude"]}, "native": {"candidates": ["native"]},
              "translated": {"candidates": ["chatty"]}, "fallback": {"candidates": ["native", "chatty"]},
              **sections.pop("models", {})}
    path = write_policy(folder, {**upstreams, **sections.pop("upstreams", {})}, models, **sections)
    gateway = Gateway(Settings(policy=str(path)))
    return Messages(loop, gateway, loop.serve(gateway), claude, native, chatty, claude_url, [])


@pytest.fixture
def stack(loop: Loop, tmp_path: Path) -> Iterator[Messages]:
    made = start(loop, tmp_path)
    yield made
    for client in made.clients:
        client.close()


def test_plain_pass_through_matches_the_upstream(stack: Messages) -> None:
    raw = stack.client().messages.with_raw_response.create(model="claude-sonnet-4-5", max_tokens=64,
                                                            messages=HELLO)
    message = raw.parse()
    straight = stack.direct().messages.create(model="claude-upstream-model", max_tokens=64, messages=HELLO)
    assert raw.headers["x-switchyard-upstream"] == "claude"
    assert message.content == straight.content
    assert message.usage == straight.usage
    assert message.model == "claude-upstream-model"
    seen = stack.claude.seen[0]
    assert seen.headers["x-api-key"] == UPSTREAM_KEY
    assert seen.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in seen.headers
    assert seen.body == {"model": "claude-upstream-model", "max_tokens": 64, "messages": HELLO}
