"""Hostile sockets, with no key: each is closed by its deadline or refused, and real requests meanwhile succeed."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import resource
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import openai
import orjson
import pytest
import uvicorn

from gateway.serving.app import Gateway, Settings
from gateway.serving.connections import SocketLimits
from gateway.serving.server import ServeOptions, uvicorn_config
from gateway.tools.standin import StandIn
from tests.conftest import KEY, Loop, Served, upstream_spec, wait_for, write_policy
from tests.tools.cli.helpers import free_port, ready

HELLO = [{"role": "user", "content": "Hello"}]
DEADLINE_S = 10.0  # how long a test waits for something that should happen well within it
PARTIAL = b"POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"


@dataclass
class Edge:
    """A gateway served through `switchyard serve`'s uvicorn settings, with the limits a test chose."""

    served: Served
    loop: Loop

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.served.port), timeout=DEADLINE_S)
        self.loop.sockets.append(sock)
        return sock

    def chat(self) -> str:
        """A real request, on a connection of its own."""
        client = self.loop.client(self.served.url + "/v1")
        return str(client.chat.completions.create(model="chat", messages=HELLO).choices[0].message.content)


class SocketLoop(Loop):
    """The conftest loop, closing the raw sockets a test opened as well."""

    def __init__(self) -> None:
        super().__init__()
        self.sockets: list[socket.socket] = []

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()
        super().close()


@pytest.fixture
def sockets_loop() -> Iterator[SocketLoop]:
    running = SocketLoop()
    yield running
    running.close()


def serve_edge(loop: SocketLoop, tmp_path: Path, **limits: float) -> Edge:
    upstream = loop.serve(StandIn("primary"))
    path = write_policy(tmp_path, {"primary": upstream_spec(upstream.url)}, {"chat": {"candidates": ["primary"]}})
    chosen = SocketLimits(**{"header_timeout_s": 0.5, "body_timeout_s": 0.5, "keepalive_s": 0.5, **limits})
    config = uvicorn_config(Gateway(Settings(policy=str(path))), ServeOptions(port=0, limits=chosen,
                                                                             log_level="warning"), loop="none")
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.run_coroutine_threadsafe(server.serve(), loop.loop)
    wait_for(lambda: server.started or task.done(), what="the gateway to start")
    served = Served(server, task)
    loop.served.append(served)
    return Edge(served, loop)


def read_response(sock: socket.socket, timeout: float = DEADLINE_S) -> bytes:
    """One whole HTTP response with a Content-Length, however the server splits it into segments."""
    received = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        head, sep, body = received.partition(b"\r\n\r\n")
        if sep:
            length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
            if length is not None and len(body) >= int(length.group(1)):
                return received
        readable, _, _ = select.select([sock], [], [], deadline - time.monotonic())
        chunk = sock.recv(65536) if readable else b""
        if not chunk:
            break
        received += chunk
    raise AssertionError(f"no whole response in time (received {received[:200]!r})")


def read_until_closed(sock: socket.socket, timeout: float = DEADLINE_S) -> bytes:
    """Everything the server sends until it closes the connection; fails the test if it does not close in time."""
    received = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        readable, _, _ = select.select([sock], [], [], deadline - time.monotonic())
        if not readable:
            break
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk
    raise AssertionError(f"the server kept the connection open (received {received[:200]!r})")


def status_and_body(response: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = response.partition(b"\r\n\r\n")
    assert b"connection: close" in head.lower()
    return int(head.split(b" ", 2)[1]), orjson.loads(body)


def trickle(sock: socket.socket, data: bytes, every_s: float) -> int:
    """Send data a byte at a time, one every every_s, until the server answers; how many bytes went."""
    for sent, byte in enumerate(data):
        if select.select([sock], [], [], every_s)[0]:
            return sent
        try:
            sock.sendall(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            return sent
    return len(data)


def send_until_refused(sock: socket.socket, head: bytes, chunk: bytes, total: int) -> int:
    """Send head, then chunk after chunk up to total bytes, until the server answers; how many bytes went."""
    sock.sendall(head)
    sent = len(head)
    while sent < total and not select.select([sock], [], [], 0)[0]:
        try:
            sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            break
        sent += len(chunk)
    return sent


def test_an_idle_connection_is_closed_at_the_keep_alive_deadline(sockets_loop: SocketLoop, tmp_path: Path) -> None:
    edge = serve_edge(sockets_loop, tmp_path, keepalive_s=1.0)
    idle = [edge.connect() for _ in range(20)]
    assert edge.chat().startswith("[primary]")
    for sock in idle:
        assert read_until_closed(sock) == b""  # closed quietly: no request was begun


def test_a_connection_is_idle_again_after_its_response(sockets_loop: SocketLoop, tmp_path: Path) -> None:
    edge = serve_edge(sockets_loop, tmp_path)
    sock = edge.connect()
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n")
    response = read_response(sock)
    assert response.startswith(b"HTTP/1.1 200 OK")
    assert response.endswith(b'{"status":"ok"}')
    assert read_until_closed(sock) == b""


def test_partial_headers_get_408_at_the_header_deadline(sockets_loop: SocketLoop, tmp_path: Path) -> None:
    edge = serve_edge(sockets_loop, tmp_path)
    partial = [edge.connect() for _ in range(10)]
    for sock in partial:
        sock.sendall(PARTIAL)
    assert edge.chat().startswith("[primary]")
    for sock in partial:
        status, body = status_and_body(read_until_closed(sock))
        assert status == 408
        assert body["error"]["code"] == "request_timeout"  # type: ignore[index]


def test_headers_trickled_do_not_extend_the_header_deadline(sockets_loop: SocketLoop, tmp_path: Path) -> None:
    edge = serve_edge(sockets_loop, tmp_path)
    sock = edge.connect()
    headers = PARTIAL + b"".join(b"X-Filler-%d: %s\r\n" % (n, b"a" * 40) for n in range(60)) + b"\r\n"
    sent = trickle(sock, headers, every_s=0.01)
    assert sent < len(headers)  # refused before the headers were all in, though a byte came every 10 ms
    assert status_and_body(read_until_closed(sock))[0] == 408
    assert edge.chat().startswith("[primary]")


def test_a_body_trickled_under_its_content_length_gets_408_at_the_body_deadline(sockets_loop: SocketLoop,
                                                                                 tmp_path: Path) -> None:
    edge = serve_edge(sockets_loop, tmp_path)
    sock = edge.connect()
    body = orjson.dumps({"model": "chat", "messages": HELLO, "user": "x" * 1000})
    sock.sendall(PARTIAL + b"Authorization: Bearer %s\r\nContent-Length: %d\r\n\r\n" % (KEY.encode(), len(body)))
    sent = trickle(sock, body, every_s=0.01)
    assert sent < len(body)
    status, error = status_and_body(read_until_closed(sock))
    assert status == 408
    assert "body did not arrive within 0.5 s" in error["error"]["message"]  # type: ignore[index]
    assert edge.chat().startswith("[primary]")


def test_a_200_mb_header_value_is_refused_with_431_after_the_header_limit(sockets_loop: SocketLoop,
                                                                           tmp_path: Path) -> None:
    edge = serve_edge(sockets_loop, tmp_path, header_timeout_s=30)
    sock = edge.connect()
    sent = send_until_refused(sock, b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nX-Big: ", b"a" * 65536,
                              200 * 1024 * 1024)
    assert sent < 16 * 1024 * 1024  # refused long before the 200 MB were sent
    status, body = status_and_body(read_until_closed(sock))
    assert status == 431
    assert body["error"]["code"] == "request_header_fields_too_large"  # type: ignore[index]
    assert edge.chat().startswith("[primary]")


def test_headers_over_the_limit_in_one_packet_get_431(sockets_loop: SocketLoop, tmp_path: Path) -> None:
    edge = serve_edge(sockets_loop, tmp_path, max_header_bytes=4096)
    sock = edge.connect()
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nX-Big: " + b"a" * 5000 + b"\r\n\r\n")
    assert status_and_body(read_until_closed(sock))[0] == 431


def test_headers_over_the_limit_in_two_reads_under_it_get_431(sockets_loop: SocketLoop, tmp_path: Path) -> None:
    edge = serve_edge(sockets_loop, tmp_path, max_header_bytes=4096, header_timeout_s=30)
    sock = edge.connect()
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nX-A: " + b"a" * 3000 + b"\r\n")
    assert not select.select([sock], [], [], 0.2)[0]  # no answer to half the headers (and they are read apart)
    sock.sendall(b"X-B: " + b"b" * 3000 + b"\r\n\r\n")
    assert status_and_body(read_until_closed(sock))[0] == 431


def test_50000_headers_are_refused_with_431(sockets_loop: SocketLoop, tmp_path: Path) -> None:
    edge = serve_edge(sockets_loop, tmp_path, max_header_bytes=10 * 1024 * 1024, header_timeout_s=30)
    sock = edge.connect()
    headers = b"".join(b"X-H%d: v\r\n" % n for n in range(50_000))
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the server may close before the last one
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n" + headers + b"\r\n")
    status, body = status_and_body(read_until_closed(sock))
    assert status == 431
    assert "more than 100 headers" in body["error"]["message"]  # type: ignore[index]


def test_over_the_cap_the_longest_idle_connection_makes_room(sockets_loop: SocketLoop, tmp_path: Path) -> None:
    edge = serve_edge(sockets_loop, tmp_path, max_connections=4, keepalive_s=30)
    idle = [edge.connect() for _ in range(4)]
    wait_for(lambda: len(edge.served.server.config.guard.open) == 4,  # type: ignore[attr-defined]
             what="four connections open")
    assert edge.chat().startswith("[primary]")
    assert read_until_closed(idle[0]) == b""  # the oldest idle connection was closed to make room
    assert not select.select(idle[2:], [], [], 0)[0]  # newer ones stay open


def test_when_every_connection_is_serving_a_new_request_gets_503_and_one_warning(
        sockets_loop: SocketLoop, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    edge = serve_edge(sockets_loop, tmp_path, max_connections=3, body_timeout_s=30, keepalive_s=30)
    busy = [edge.connect() for _ in range(3)]
    for sock in busy:  # each request's body is still to come: none of them is idle
        sock.sendall(PARTIAL + b"Content-Length: 100\r\n\r\n")
    wait_for(lambda: len(edge.served.server.config.guard._idle) == 0,  # type: ignore[attr-defined]
             what="three connections serving")
    with caplog.at_level(logging.WARNING, logger="switchyard.connections"):
        for _ in range(3):
            with pytest.raises(openai.InternalServerError) as refused:
                edge.chat()
            assert refused.value.status_code == 503
            assert refused.value.code == "too_many_connections"
    warnings = [r for r in caplog.records if r.name == "switchyard.connections"]
    assert len(warnings) == 1
    assert "3 client connections open" in warnings[0].getMessage()
    for sock in busy:
        sock.close()
    wait_for(lambda: len(edge.served.server.config.guard.open) == 0,  # type: ignore[attr-defined]
             what="the busy connections to go")
    assert edge.chat().startswith("[primary]")


def test_a_connection_answered_before_its_body_is_in_is_closed_at_the_body_deadline(sockets_loop: SocketLoop,
                                                                                     tmp_path: Path) -> None:
    edge = serve_edge(sockets_loop, tmp_path)
    sock = edge.connect()
    sock.sendall(PARTIAL + b"Authorization: Bearer %s\r\nContent-Length: 999999999\r\n\r\n{" % KEY.encode())
    response = read_until_closed(sock)  # 413 at once, from Content-Length alone; then the body never comes
    assert response.startswith(b"HTTP/1.1 413")
    assert response.count(b"HTTP/1.1") == 1


def test_a_trailing_slash_never_redirects_to_the_clients_host(sockets_loop: SocketLoop, tmp_path: Path) -> None:
    edge = serve_edge(sockets_loop, tmp_path)
    sock = edge.connect()
    sock.sendall(b"GET /admin/spend/ HTTP/1.1\r\nHost: evil.example:666\r\nConnection: close\r\n\r\n")
    response = read_until_closed(sock)
    head = response.partition(b"\r\n\r\n")[0].lower()
    assert response.startswith(b"HTTP/1.1 404")
    assert b"location" not in head
    assert b"evil.example" not in response


def limit_open_files() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (512, 512))


def test_600_idle_sockets_against_512_open_files_do_not_lock_a_real_request_out(sockets_loop: SocketLoop,
                                                                               tmp_path: Path) -> None:
    upstream = sockets_loop.serve(StandIn("primary"))
    path = write_policy(tmp_path, {"primary": upstream_spec(upstream.url)}, {"chat": {"candidates": ["primary"]}})
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "gateway.tools.cli", "serve", "--policy", str(path), "--port",
                                str(port), "--keepalive-s", "60", "--header-timeout-s", "60"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, preexec_fn=limit_open_files,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        wait_for(lambda: ready(port) or process.poll() is not None, timeout=30, what="switchyard serve")
        idle = []
        for _ in range(600):
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=DEADLINE_S))
            sockets_loop.sockets.append(idle[-1])
        client = sockets_loop.client(f"http://127.0.0.1:{port}/v1")
        for _ in range(5):
            assert client.with_options(max_retries=0).chat.completions.create(
                model="chat", messages=HELLO).choices[0].message.content.startswith("[primary]")  # type: ignore[union-attr]
        closed = sum(1 for sock in idle if select.select([sock], [], [], 0)[0] and sock.recv(1) == b"")
        assert closed >= 600 - 256  # the cap, half of 512, held: the oldest idle ones made room
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=30)[0].decode()
    assert "Too many open files" not in output
    assert sum("client connections open, the cap" in line for line in output.splitlines()) == 1


def test_a_kept_alive_connection_serves_request_after_request_and_streams(sockets_loop: SocketLoop,
                                                                          tmp_path: Path) -> None:
    edge = serve_edge(sockets_loop, tmp_path, keepalive_s=30)
    client = sockets_loop.client(edge.served.url + "/v1")
    for _ in range(3):
        assert str(client.chat.completions.create(model="chat", messages=HELLO).choices[0].message.content
                   ).startswith("[primary]")
    assert len(edge.served.server.config.guard.open) == 1  # type: ignore[attr-defined]  # all on one connection
    streamed = "".join(c.choices[0].delta.content or "" for c in
                       client.chat.completions.create(model="chat", messages=HELLO, stream=True) if c.choices)
    assert streamed.startswith("[primary]")


def test_pipelined_requests_past_the_header_limit_in_one_read_are_all_answered(sockets_loop: SocketLoop,
                                                                               tmp_path: Path) -> None:
    edge = serve_edge(sockets_loop, tmp_path, keepalive_s=30, header_timeout_s=30)
    sock = edge.connect()
    body = orjson.dumps({"model": "chat", "messages": [{"role": "user", "content": "a" * 40_000}]})
    post = PARTIAL + b"Authorization: Bearer %s\r\nContent-Length: %d\r\n\r\n" % (KEY.encode(), len(body)) + body
    healthz = b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n"
    # 40 KB of requests, then the start of one more, in one read: its headers so far are a few bytes
    sock.sendall(post + healthz * 200 + b"GET /healthz HTTP/1.1\r\nHo")
    wait_for(lambda: select.select([sock], [], [], 0)[0] != [], what="the first answer")
    sock.sendall(b"st: gateway\r\nConnection: close\r\n\r\n")
    answers = read_until_closed(sock)
    assert answers.startswith(b"HTTP/1.1 200")
    assert b"[primary]" in answers.partition(b"HTTP/1.1 200")[2].partition(b"HTTP/1.1")[0]
    assert answers.count(b"HTTP/1.1 200") == 202
