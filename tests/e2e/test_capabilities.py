"""Capabilities through the gateway: an upstream listing none takes every request feature; a list narrows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai
import pytest

from gateway.serving.app import Gateway, Settings
from gateway.tools.standin import StandIn
from tests.conftest import Loop, Stack, upstream_spec, write_policy

TOOLS: Any = [{"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}]
HELLO: Any = [{"role": "user", "content": "What time is it?"}]


def unlisted_stack(loop: Loop, tmp_path: Path, listed: list[str] | None = None) -> Stack:
    """One stand-in 'open' whose policy lists no capabilities (or `listed`), behind route 'chat'."""
    app = StandIn("open")
    spec = upstream_spec(loop.serve(app).url, model="open-model")
    del spec["capabilities"]
    if listed is not None:
        spec["capabilities"] = listed
    path = write_policy(tmp_path, {"open": spec}, {"chat": {"candidates": ["open"]}})
    gateway = Gateway(Settings(policy=str(path)))
    return Stack(gateway, loop.serve(gateway), {"open": app}, loop)


def test_a_tools_request_to_an_upstream_listing_no_capabilities_is_served(loop: Loop, tmp_path: Path) -> None:
    stack = unlisted_stack(loop, tmp_path)
    raw = stack.client().chat.completions.with_raw_response.create(
        model="chat", messages=HELLO, tools=TOOLS, response_format={"type": "json_object"})
    calls = raw.parse().choices[0].message.tool_calls
    assert calls is not None
    assert calls[0].function.name == "get_time"
    assert raw.headers["x-switchyard-upstream"] == "open"
    assert stack.upstreams["open"].seen[0].body["tools"] == TOOLS


def test_the_responses_api_reaches_an_upstream_listing_no_capabilities(loop: Loop, tmp_path: Path) -> None:
    stack = unlisted_stack(loop, tmp_path)
    response = stack.client().responses.create(model="chat", input="Say hello")
    assert response.output_text.startswith("[open]")
    assert stack.upstreams["open"].seen[0].path == "/v1/responses"


@pytest.mark.parametrize(("listed", "capability", "param"), [
    ([], "tools", "tools"), (["continuation"], "tools", "tools"), (["tools"], "json", "response_format")])
def test_a_list_narrows_and_the_refusal_names_the_capability(loop: Loop, tmp_path: Path, listed: list[str],
                                                             capability: str, param: str) -> None:
    stack = unlisted_stack(loop, tmp_path, listed)
    with pytest.raises(openai.BadRequestError) as caught:
        stack.client().chat.completions.create(model="chat", messages=HELLO, tools=TOOLS,
                                               response_format={"type": "json_object"})
    error = caught.value.response.json()["error"]
    assert (error["code"], error["param"]) == ("capability_unavailable", param)
    assert error["message"].startswith(f"no allowed upstream of route 'chat' supports '{capability}'")
    assert stack.upstreams["open"].seen == []
