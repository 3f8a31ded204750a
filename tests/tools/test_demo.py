"""`switchyard demo` as a real process: routing on free ports, chosen ports, and a one-line refusal of a taken port."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from gateway.tools.demo import DEMO_KEY
from tests.conftest import Loop, wait_for

HELLO = [{"role": "user", "content": "Hello"}]
UPSTREAM_LINE = re.compile(r"^  (demo-self-hosted|demo-proprietary) .* on 127\.0\.0\.1:(\d+)$")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_demo(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "gateway.tools.cli", "demo", "--log-level", "warning", *args],
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def banner_ports(process: subprocess.Popen[str]) -> dict[str, int]:
    """The stand-ins' ports as the banner states them (it is printed whole before anything serves)."""
    assert process.stdout is not None
    ports: dict[str, int] = {}
    for line in process.stdout:
        if found := UPSTREAM_LINE.match(line.rstrip("\n")):
            ports[found.group(1)] = int(found.group(2))
        if line.startswith("Routes:"):
            return ports
    raise AssertionError(f"the demo ended before its banner: {process.communicate()}")


@pytest.fixture
def demo() -> Iterator[tuple[subprocess.Popen[str], int, dict[str, int]]]:
    """A demo on a free gateway port with the default (free) stand-in ports."""
    port = free_port()
    process = run_demo("--port", str(port))
    try:
        ports = banner_ports(process)
        wait_for(lambda: ready(port) or process.poll() is not None, timeout=30, what="switchyard demo")
        assert process.poll() is None, process.communicate()
        yield process, port, ports
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
    assert process.returncode == 0


def test_demo_routes_by_cost_and_keeps_personal_data_in_house(
        demo: tuple[subprocess.Popen[str], int, dict[str, int]], loop: Loop) -> None:
    _, port, _ = demo
    client = loop.client(f"http://127.0.0.1:{port}/v1", DEMO_KEY)
    cheap = client.chat.completions.with_raw_response.create(model="chat", messages=HELLO)
    assert cheap.headers["x-switchyard-upstream"] == "demo-self-hosted"
    smart = client.chat.completions.with_raw_response.create(model="smart", messages=HELLO)
    assert smart.headers["x-switchyard-upstream"] == "demo-proprietary"
    personal = [{"role": "user", "content": "Write to jane.doe@example.com about her order"}]
    kept = client.chat.completions.with_raw_response.create(model="smart", messages=personal)
    assert kept.headers["x-switchyard-upstream"] == "demo-self-hosted"
    assert kept.headers["x-switchyard-data-class"] == "personal"
    streamed = "".join(c.choices[0].delta.content or "" for c in
                       client.chat.completions.create(model="chat", messages=HELLO, stream=True) if c.choices)
    assert streamed.startswith("[demo self-hosted stand-in]")


def test_demo_serves_tools_and_the_responses_api(demo: tuple[subprocess.Popen[str], int, dict[str, int]],
                                                 loop: Loop) -> None:
    _, port, _ = demo
    client = loop.client(f"http://127.0.0.1:{port}/v1", DEMO_KEY)
    response = client.responses.with_raw_response.create(model="chat", input="Say hello")
    assert response.headers["x-switchyard-upstream"] == "demo-self-hosted"
    assert response.parse().output_text.startswith("[demo self-hosted stand-in]")
    tools: Any = [{"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}]
    calls = client.chat.completions.create(model="smart", messages=HELLO, tools=tools).choices[0].message.tool_calls
    assert calls is not None
    assert calls[0].function.name == "get_time"


def test_a_fault_posted_to_a_stand_in_makes_the_route_fall_back(
        demo: tuple[subprocess.Popen[str], int, dict[str, int]], loop: Loop) -> None:
    _, port, ports = demo
    queued = httpx.post(f"http://127.0.0.1:{ports['demo-self-hosted']}/standin/faults",
                        json={"status": 503, "count": 2}, timeout=10)
    assert queued.status_code == 200
    assert [fault["status"] for fault in queued.json()["data"]] == [503, 503]
    client = loop.client(f"http://127.0.0.1:{port}/v1", DEMO_KEY)
    fallen = client.chat.completions.with_raw_response.create(model="chat", messages=HELLO)
    assert fallen.headers["x-switchyard-upstream"] == "demo-proprietary"
    assert str(fallen.parse().choices[0].message.content).startswith("[demo proprietary stand-in]")
    again = client.chat.completions.with_raw_response.create(model="chat", messages=HELLO)
    assert again.headers["x-switchyard-upstream"] == "demo-self-hosted"


def test_demo_takes_free_stand_in_ports_by_default_and_says_which(
        demo: tuple[subprocess.Popen[str], int, dict[str, int]], loop: Loop) -> None:
    _, _, ports = demo
    assert set(ports) == {"demo-self-hosted", "demo-proprietary"}
    assert all(port > 0 for port in ports.values())
    for name, label in (("demo-self-hosted", "self-hosted"), ("demo-proprietary", "proprietary")):
        direct = loop.client(f"http://127.0.0.1:{ports[name]}/v1", "any")
        answer = direct.chat.completions.create(model="m", messages=HELLO).choices[0].message.content
        assert str(answer).startswith(f"[demo {label} stand-in]")


def test_demo_serves_the_stand_ins_on_the_ports_asked_for(loop: Loop) -> None:
    port, self_port, third_port = free_port(), free_port(), free_port()
    process = run_demo("--port", str(port), "--upstream-ports", f"{self_port},{third_port}")
    try:
        assert banner_ports(process) == {"demo-self-hosted": self_port, "demo-proprietary": third_port}
        wait_for(lambda: ready(port) or process.poll() is not None, timeout=30, what="switchyard demo")
        direct = loop.client(f"http://127.0.0.1:{third_port}/v1", "any")
        answer = direct.chat.completions.create(model="m", messages=HELLO).choices[0].message.content
        assert str(answer).startswith("[demo proprietary stand-in]")
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
    assert process.returncode == 0


@pytest.mark.parametrize(("option", "what"), [("--port", "the gateway (--port)"),
                                              ("--upstream-ports", "a stand-in upstream (--upstream-ports)")])
def test_a_taken_port_is_one_line_naming_it_not_a_traceback(option: str, what: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        args = ["--port", str(busy)] if option == "--port" else ["--port", "0", option, f"0,{busy}"]
        process = run_demo(*args)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 1
    assert out == ""
    assert err.splitlines() == [f"switchyard demo: {what} cannot listen on 127.0.0.1:{busy}: Address already in use"]


def test_upstream_ports_must_be_two_ports() -> None:
    process = run_demo("--upstream-ports", "9101")
    _, err = process.communicate(timeout=30)
    assert process.returncode == 2
    assert err.splitlines()[-1].endswith("argument --upstream-ports: '9101' is not two ports written A,B")
