"""Every answer carries the request id and the policy hash; generated request ids are random."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import openai
import pytest

from gateway.serving.app import Gateway
from tests.conftest import KEY, Loop, Stack, start_stack
from tests.guarantees.test_sockets import SocketLoop, read_until_closed, serve_edge, sockets_loop

__all__ = ["sockets_loop"]  # the fixture, shared with the socket guarantees
HELLO = [{"role": "user", "content": "hello"}]
AUTH = {"authorization": f"Bearer {KEY}"}
GENERATED = re.compile(r"[0-9a-f]{24}")


def answers(stack: Stack) -> dict[str, httpx.Response]:
    """One answer of each kind the gateway gives, by what it is."""
    url = stack.served.url
    chat = {"model": "chat", "messages": HELLO}
    return {
        "served": httpx.post(url + "/v1/chat/completions", headers=AUTH, json=chat),
        "401": httpx.post(url + "/v1/chat/completions", json=chat),
        "401 models": httpx.get(url + "/v1/models"),
        "unknown model": httpx.post(url + "/v1/chat/completions", headers=AUTH, json={**chat, "model": "nope"}),
        "bad json": httpx.post(url + "/v1/chat/completions", headers=AUTH, content=b"{"),
        "404": httpx.get(url + "/v1/nothing-here"),
        "405 hot": httpx.get(url + "/v1/chat/completions"),
        "405 site": httpx.post(url + "/healthz"),
        "models": httpx.get(url + "/v1/models", headers=AUTH),
        "model": httpx.get(url + "/v1/models/chat", headers=AUTH),
        "no such model": httpx.get(url + "/v1/models/nope", headers=AUTH),
        "healthz": httpx.get(url + "/healthz"),
        "readyz": httpx.get(url + "/readyz"),
        "metrics": httpx.get(url + "/metrics"),
        "admin": httpx.get(url + "/admin/spend", headers=AUTH),
    }


def test_every_answer_carries_a_request_id_and_the_policy_hash(stack: Stack) -> None:
    policy = stack.gateway.policy.hash
    got = answers(stack)
    assert [got["served"].status_code, got["401"].status_code, got["404"].status_code, got["405 hot"].status_code,
            got["405 site"].status_code] == [200, 401, 404, 405, 405]
    for what, response in got.items():
        assert GENERATED.fullmatch(response.headers.get("x-request-id", "")), what
        assert response.headers.get("x-switchyard-policy") == policy, what


def test_a_client_s_own_request_id_is_kept_when_it_is_safe_and_replaced_when_not(stack: Stack) -> None:
    url = stack.served.url
    for path in ("/v1/models", "/healthz", "/v1/nothing-here"):
        assert httpx.get(url + path, headers={**AUTH, "x-request-id": "trace-42.a_b"}).headers["x-request-id"] == \
            "trace-42.a_b"
    for refused in ("../../etc/passwd", "a/b", "x" * 129, "sp ace"):
        for path in ("/v1/models", "/v1/chat/completions"):
            response = httpx.request("GET" if path == "/v1/models" else "POST", url + path,
                                     headers={**AUTH, "x-request-id": refused},
                                     json={"model": "chat", "messages": HELLO})
            assert GENERATED.fullmatch(response.headers["x-request-id"]), (refused, path)


def test_generated_request_ids_share_no_prefix_a_client_could_count_with(stack: Stack) -> None:
    client = stack.client()
    ids = [client.chat.completions.with_raw_response.create(model="chat", messages=HELLO).headers["x-request-id"]
           for _ in range(10)]
    ids += [httpx.get(stack.served.url + "/healthz").headers["x-request-id"] for _ in range(10)]
    assert len(set(ids)) == len(ids)
    assert len({i[:4] for i in ids}) > 1  # a per-process prefix and a counter would share 16 characters
    assert sorted(ids) != ids  # and would rise with each request


def test_the_openai_client_reads_the_request_id_of_an_error(stack: Stack) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        stack.client().chat.completions.create(model="nope", messages=HELLO)  # type: ignore[arg-type]
    assert GENERATED.fullmatch(caught.value.response.headers["x-request-id"])
    assert caught.value.response.headers["x-switchyard-policy"] == stack.gateway.policy.hash


def test_a_refusal_at_the_connection_carries_a_request_id_and_the_policy_hash(sockets_loop: SocketLoop,
                                                                              tmp_path: Path) -> None:
    edge = serve_edge(sockets_loop, tmp_path, max_header_bytes=1024)
    gateway = edge.served.server.config.app
    assert isinstance(gateway, Gateway)
    sock = edge.connect()
    sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 2048 + b"\r\n\r\n")
    head = read_until_closed(sock).partition(b"\r\n\r\n")[0].decode().lower()
    assert head.startswith("http/1.1 431")
    assert GENERATED.search(head.split("x-request-id: ")[1].split("\r\n")[0])
    assert f"x-switchyard-policy: {gateway.policy.hash}" in head


def test_metrics_on_a_port_of_their_own_are_not_served_on_the_main_one(loop: Loop, tmp_path: Path) -> None:
    stack = start_stack(loop, tmp_path, settings={"metrics_port": 9})
    response = httpx.get(stack.served.url + "/metrics")
    assert response.status_code == 404
    assert b"switchyard_" not in response.content
