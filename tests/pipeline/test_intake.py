"""gateway.pipeline.intake: authenticate, parse and classify, through the OpenAI inbound."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from gateway.asgi import ClientGone, Message, Receive
from gateway.errors import AuthenticationFailed, InvalidRequest, ModelNotFound
from gateway.inbound.openai import ENDPOINTS, OpenAIInbound
from gateway.pipeline.intake import REQUEST_ID, RequestIds, Taken, request_id_for, take_in
from gateway.pipeline.record import Record
from tests.conftest import KEY
from tests.pipeline.policies import runtime

CHAT = ENDPOINTS["/v1/chat/completions"]


def receiving(*parts: bytes) -> Receive:
    """An ASGI receive handing out parts as the body's messages, then a disconnect."""
    messages = [{"type": "http.request", "body": p, "more_body": i < len(parts) - 1} for i, p in enumerate(parts)]

    async def receive() -> Message:
        return messages.pop(0) if messages else {"type": "http.disconnect"}
    return receive


async def taken(tmp_path: Path, body: dict[str, object], key: str = KEY, path: str = "/v1/chat/completions",
                record: Record | None = None) -> Taken:
    raw = orjson.dumps(body)
    headers = {"authorization": f"Bearer {key}", "content-length": str(len(raw))}
    return await take_in(OpenAIInbound(), ENDPOINTS[path], runtime(tmp_path).policy, headers,
                         receiving(raw[:7], raw[7:]), 1 << 20, record or Record("r", "h", "chat"))


async def test_a_request_is_taken_in_with_its_tenant_route_and_features(tmp_path: Path) -> None:
    record = Record("r", "h", "chat")
    body = {"model": "chat", "messages": [{"role": "user", "content": "Hello there"}], "n": 2, "stream": True}
    got = await taken(tmp_path, body, record=record)
    assert got.call.body == body
    features = got.features
    assert (features.tenant, features.route, features.endpoint, features.n, features.stream) == (
        "acme", "chat", "chat", 2, True)
    assert (record.tenant, record.route, record.n, record.prompt_tokens) == ("acme", "chat", 2, features.prompt_tokens)
    assert record.prompt_tokens > 0


async def test_a_missing_key_is_told_how_to_send_one(tmp_path: Path) -> None:
    with pytest.raises(AuthenticationFailed, match="send 'Authorization: Bearer <key>'"):
        await taken(tmp_path, {"model": "chat"}, key="")
    with pytest.raises(AuthenticationFailed, match="invalid API key"):
        await taken(tmp_path, {"model": "chat"}, key="sk-not-anyones")


async def test_a_route_the_tenant_may_not_use_is_404(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound):
        await taken(tmp_path, {"model": "gpt-9", "messages": []})


async def test_stream_is_refused_where_the_endpoint_cannot_stream(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="'stream' is not supported on /embeddings") as refused:
        await taken(tmp_path, {"model": "chat", "input": "x", "stream": True}, path="/v1/embeddings")
    assert refused.value.param == "stream"


async def test_a_client_gone_before_its_body_arrived_is_told_apart(tmp_path: Path) -> None:
    headers = {"authorization": f"Bearer {KEY}"}
    with pytest.raises(ClientGone):
        await take_in(OpenAIInbound(), CHAT, runtime(tmp_path).policy, headers, receiving(),
                      1 << 20, Record("r", "h", "chat"))


@pytest.mark.parametrize(("offered", "kept"), [("abc-123_X.y", True), ("", False), ("../etc", False),
                                               ("a/b", False), ("x" * 129, False)])
def test_a_request_id_is_the_clients_only_when_safe(offered: str, kept: bool) -> None:
    chosen = request_id_for(offered)
    assert (chosen == offered) is kept
    assert len(chosen) >= 16 or kept


@pytest.mark.parametrize(("offered", "kept"), [("abc-123_X.y", True), ("", False), ("../etc", False),
                                               ("a/b", False), ("x" * 129, False)])
def test_a_processs_request_ids_keep_a_safe_offer_and_never_repeat(offered: str, kept: bool) -> None:
    ids = RequestIds()
    chosen = [ids.for_request(offered) for _ in range(1000)]
    assert all((c == offered) is kept for c in chosen)
    if not kept:
        assert len(set(chosen)) == 1000
        assert all(len(c) == 24 and REQUEST_ID.fullmatch(c) for c in chosen)
        assert RequestIds().for_request("")[:12] != chosen[0][:12]  # another replica's prefix
