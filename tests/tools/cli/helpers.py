"""What the command-line tests share: a free port, the command as a child process, its readiness, an upstream."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from gateway.tools.standin import StandIn
from tests.conftest import Loop, upstream_spec, wait_for, write_policy

if TYPE_CHECKING:
    pass

HELLO = [{"role": "user", "content": "Hello"}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])



def spawn(args: list[str], **variables: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **variables}
    return subprocess.Popen([sys.executable, "-m", "gateway.tools.cli", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)



def ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False



@pytest.fixture
def upstream(loop: Loop) -> tuple[StandIn, str]:
    app = StandIn("primary")
    return app, loop.serve(app).url



def serve(tmp_path: Path, url: str, *extra: str, **variables: str) -> tuple[subprocess.Popen[bytes], int]:
    path = write_policy(tmp_path, {"primary": upstream_spec(url)}, {"chat": {"candidates": ["primary"]}})
    port = free_port()
    process = spawn(["serve", "--policy", str(path), "--port", str(port), "--log-level", "warning", *extra],
                    **variables)
    wait_for(lambda: ready(port) or process.poll() is not None, timeout=30, what="switchyard serve")
    assert process.poll() is None, process.communicate()[0].decode()
    return process, port



def stop(process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=30)
    return process.returncode



def answer_to(port: int, request: bytes) -> bytes:
    """What the server sends on a raw connection before it closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return received
