"""Process-level settings of `switchyard serve` (its drain and workers are driven end to end in test_cli.py, its
connection limits in tests/guarantees/test_sockets.py)."""

from __future__ import annotations

import pickle
import subprocess
import sys
import tomllib
from pathlib import Path

import uvicorn
from packaging.requirements import Requirement

from gateway.connections import GuardedProtocol, SocketLimits
from gateway.server import YOUNG_OBJECTS_BEFORE_GC, ServeOptions, uvicorn_config

PROBE = """
import gc
from gateway.server import tune_gc
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
    config = uvicorn_config("gateway.server:worker_app", ServeOptions(limits=limits), factory=True, workers=2)
    assert config.http is GuardedProtocol
    assert config.ws == "none"
    assert config.guard.limits == limits
    assert config.guard.cap == 7
    assert pickle.loads(pickle.dumps(config)).guard.limits == limits  # as uvicorn hands it to each worker


def test_the_installed_uvicorn_is_the_range_the_guarded_protocol_was_tested_on() -> None:
    # gateway/connections.py subclasses uvicorn's httptools protocol: its internals are pinned, not assumed
    project = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())["project"]
    (pin,) = [Requirement(d) for d in project["dependencies"] if d.startswith("uvicorn")]
    assert pin.specifier.contains(uvicorn.__version__)
    assert pin.specifier.contains("0.54.0")
    assert not pin.specifier.contains("0.55.0")
