"""The inbound seam's defaults, through the OpenAI inbound that keeps them: everything passes through as it came."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from gateway.accounting.usage import Usage
from gateway.asgi import JSON, Message
from gateway.errors import UpstreamStatus
from gateway.inbound.openai import CHAT_EVENTS, OpenAIInbound
from gateway.pipeline.inbound import Call, Endpoint, Inbound, Reply
from gateway.pipeline.runtime import Runtime
from gateway.routing.policy.loader import load_policy
from tests.conftest import upstream_spec, write_policy

CHAT = Endpoint("/v1/chat/completions", "chat", "/chat/completions", streamable=True)


def call(body: bytes = b'{"model": "chat", "messages": []}') -> Call:
    return OpenAIInbound().parse(CHAT, body, {})


def test_every_openai_path_is_an_endpoint_keyed_by_its_own_path() -> None:
    endpoints = OpenAIInbound().endpoints
    assert endpoints["/v1/chat/completions"] == CHAT
    assert all(path == endpoint.path for path, endpoint in endpoints.items())
    assert Inbound.credential_hint == "Authorization: Bearer <key>"


def test_the_seams_records_cannot_change_once_made() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        CHAT.streamable = False  # type: ignore[misc]
    assert Reply(200, b"{}") == Reply(200, b"{}", JSON, [])


def test_by_default_the_body_goes_to_the_endpoints_upstream_path_as_parsed() -> None:
    made = call()
    assert made.client_body is made.body
    assert OpenAIInbound().outbound(made, []) == ("/chat/completions", {"model": "chat", "messages": []})


def test_by_default_the_runtime_is_the_one_given(tmp_path: Path) -> None:
    policy = load_policy(write_policy(tmp_path, {"a": upstream_spec("http://127.0.0.1:1")},
                                      {"chat": {"candidates": ["a"]}}))
    runtime = Runtime(policy, {})
    assert OpenAIInbound().bind(runtime) is runtime


def test_by_default_usage_is_read_from_the_answers_own_usage() -> None:
    inbound = OpenAIInbound()
    assert inbound.usage(call(), b'{"usage": {"prompt_tokens": 3, "completion_tokens": 4}}') == Usage(3, 4)
    assert inbound.usage(call(), b"not json") == Usage()


@pytest.mark.parametrize(("content_type", "sent"), [(b"application/json; charset=utf-8", b"application/json; "
                                                    b"charset=utf-8"), (b"text/html", JSON), (b"", JSON)])
def test_by_default_an_upstream_error_passes_with_its_status_and_a_json_content_type(content_type: bytes,
                                                                                     sent: bytes) -> None:
    error = UpstreamStatus("a", 422, b'{"error": {"message": "bad"}}', content_type)
    reply = OpenAIInbound().upstream_error(call(), error, b'{"error": {"message": "scrubbed"}}')
    assert reply == Reply(422, b'{"error": {"message": "scrubbed"}}', sent)


def test_by_default_events_go_out_unchanged_and_end_as_they_ended() -> None:
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    assert CHAT_EVENTS.outgoing(send) is send
    assert CHAT_EVENTS.ending(b"data: [DONE]\n\n") == b"data: [DONE]\n\n"
    async def relay() -> None:
        await CHAT_EVENTS.outgoing(send)({"type": "http.response.body", "body": b"x"})

    asyncio.run(relay())
    assert sent == [{"type": "http.response.body", "body": b"x"}]
