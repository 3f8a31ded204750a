"""Process-level settings of `switchyard serve` (its drain and workers are driven end to end in
tests/tools/cli/test_serve.py, its connection limits in tests/guarantees/test_sockets.py)."""

from __future__ import annotations

import pickle
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import httpx
import pytest
import uvicorn
from packaging.requirements import Requirement

from gateway.serving.connections import GuardedProtocol, SocketLimits
from gateway.serving.server import YOUNG_OBJECTS_BEFORE_GC, ServeOptions, uvicorn_config
from gateway.tools.standin import StandIn
from tests.conftest import Loop, upstream_spec, wait_for, write_policy
from tests.tools.cli.helpers import HELLO, free_port, serve, spawn, stop, upstream

__all__ = ["upstream"]  # the stand-in fixture, shared with tests.tools.cli

PROBE = """
import gc
from gateway.serving.server import tune_gc
tune_gc()
print(gc.get_threshold()[0], gc.get_freeze_count())
"""


def test_serving_hides_start_up_objects_from_the_collector_and_collects_young_ones_less_often() -> None:
    # in a process of its own: freezing this one would keep the rest of the suite's garbage forever
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout.split()
    threshold, frozen = int(out[0]), int(out[1])
    assert threshold == YOUNG_OBJECTS_BEFORE_GC
    assert frozen > 10_000  # the modules and everything built on import


def test_serve_runs_uvicorn_with_the_guarded_protocol_and_the_limits_given() -> None:
    limits = SocketLimits(header_timeout_s=3, max_connections=7)
    config = uvicorn_config("gateway.serving.server:worker_app", ServeOptions(limits=limits), factory=True, workers=2)
    assert config.http is GuardedProtocol
    assert config.ws == "none"
    assert config.guard.limits == limits
    assert config.guard.cap == 7
    assert pickle.loads(pickle.dumps(config)).guard.limits == limits  # as uvicorn hands it to each worker


def test_the_installed_uvicorn_is_the_range_the_guarded_protocol_was_tested_on() -> None:
    # gateway/serving/connections.py subclasses uvicorn's httptools protocol: its internals are pinned, not assumed
    project = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"]
    (pin,) = [Requirement(d) for d in project["dependencies"] if d.startswith("uvicorn")]
    assert pin.specifier.contains(uvicorn.__version__)
    assert pin.specifier.contains("0.54.0")
    assert not pin.specifier.contains("0.55.0")


# --- /metrics on a port of its own -------------------------------------------------------------------------------


@pytest.mark.parametrize("workers", ["1", "2"])
def test_metrics_on_their_own_port_leave_the_main_port(tmp_path: Path, upstream: tuple[StandIn, str], loop: Loop,
                                                       workers: str) -> None:
    metrics_port = free_port()
    flag = ["--metrics-port", str(metrics_port)] if workers == "1" else []
    variables = {} if workers == "1" else {"SWITCHYARD_METRICS_PORT": str(metrics_port)}
    process, port = serve(tmp_path, upstream[1], "--workers", workers, *flag, **variables)
    try:
        loop.client(f"http://127.0.0.1:{port}/v1").chat.completions.create(model="chat", messages=HELLO)
        main = httpx.get(f"http://127.0.0.1:{port}/metrics")
        assert main.status_code == 404
        assert b"switchyard_" not in main.content
        served = 'switchyard_requests_total{endpoint="chat",route="chat",status="200",tenant="acme",upstream="primary"}'
        wait_for(lambda: served in httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text,
                 what="the request counted on the metrics port")
        assert "switchyard_policy_info" in httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
    finally:
        assert stop(process) == 0


def test_a_metrics_port_that_is_taken_is_one_line_of_error(tmp_path: Path, upstream: tuple[StandIn, str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        path = write_policy(tmp_path, {"primary": upstream_spec(upstream[1])}, {"chat": {"candidates": ["primary"]}})
        process = spawn(["serve", "--policy", str(path), "--port", str(free_port()), "--metrics-port",
                         str(busy)])
        out = process.communicate(timeout=30)[0].decode()
    assert process.returncode == 1
    assert f"cannot serve metrics on 127.0.0.1:{busy}" in out
    assert "Traceback" not in out
