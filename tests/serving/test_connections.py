"""The guarded protocol's limits at their edges: a cap from the open-file limit, headers exactly at a limit served.

The attacks on these limits (trickled headers, floods of sockets, huge headers) are in tests/guarantees/test_sockets.py.
"""

from __future__ import annotations

import resource
from pathlib import Path

import orjson
import pytest

from gateway.serving.connections import SocketLimits
from tests.guarantees.test_sockets import SocketLoop, read_until_closed, serve_edge, sockets_loop

__all__ = ["sockets_loop"]  # the fixture, shared with the socket guarantees
FIXED = [("host", "gateway"), ("connection", "close")]
COUNTED = len("/healthz") + sum(len(name) + len(value) + 4 for name, value in FIXED)  # the limit counts the path,
# and each header as its name, its value and four bytes (": " and CRLF)
PAD = 1024 - COUNTED - len("x-pad") - 4  # the x-pad value that brings a request to exactly 1024 bytes


def test_a_connection_cap_given_is_the_cap() -> None:
    assert SocketLimits(max_connections=7).connection_cap() == 7


def test_without_a_cap_it_is_half_the_open_file_limit_and_never_under_16() -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    files = soft if soft != resource.RLIM_INFINITY else 65536
    assert SocketLimits().connection_cap() == max(16, files // 2)


def ask(loop: SocketLoop, tmp_path: Path, headers: list[tuple[str, str]], **limits: float) -> bytes:
    edge = serve_edge(loop, tmp_path, **limits)
    sock = edge.connect()
    lines = "".join(f"{name}: {value}\r\n" for name, value in [FIXED[0], *headers, FIXED[1]])
    sock.sendall(f"GET /healthz HTTP/1.1\r\n{lines}\r\n".encode())
    return read_until_closed(sock)


@pytest.mark.parametrize(("pad", "status"), [(PAD, 200), (PAD + 1, 431)])
def test_headers_exactly_at_the_byte_limit_are_served_and_one_byte_more_is_not(
        sockets_loop: SocketLoop, tmp_path: Path, pad: int, status: int) -> None:
    answer = ask(sockets_loop, tmp_path, [("x-pad", "a" * pad)], max_header_bytes=1024)
    assert answer.startswith(f"HTTP/1.1 {status} ".encode()), answer[:80]


@pytest.mark.parametrize(("extra", "status"), [(3, 200), (4, 431)])
def test_exactly_max_headers_are_served_and_one_more_is_not(sockets_loop: SocketLoop, tmp_path: Path, extra: int,
                                                            status: int) -> None:
    headers = [(f"x-{n}", "v") for n in range(extra)]  # with host and connection: extra + 2 headers
    answer = ask(sockets_loop, tmp_path, headers, max_headers=5)
    assert answer.startswith(f"HTTP/1.1 {status} ".encode()), answer[:80]


def test_a_refusal_is_a_whole_json_response_that_closes_the_connection(sockets_loop: SocketLoop,
                                                                       tmp_path: Path) -> None:
    answer = ask(sockets_loop, tmp_path, [(f"x-{n}", "v") for n in range(4)], max_headers=5)
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 431 Request Header Fields Too Large"
    assert {"content-type: application/json", f"content-length: {len(body)}", "connection: close"} <= set(lines)
    assert orjson.loads(body)["error"] == {"message": "the request has more than 5 headers",
                                           "type": "invalid_request_error", "code": "request_header_fields_too_large",
                                           "param": None}
