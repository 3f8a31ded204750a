"""Process-level settings of `switchyard serve` (its drain and workers are driven end to end in test_cli.py)."""

from __future__ import annotations

import subprocess
import sys

from gateway.server import YOUNG_OBJECTS_BEFORE_GC

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
