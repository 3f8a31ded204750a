"""The lifespan: a runtime and a reloader while it runs, each reload a new runtime, nothing of them left after."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.pipeline.runtime import Runtime
from gateway.serving.components import Components
from gateway.serving.lifespan import _closed, lifespan
from gateway.serving.settings import Settings
from tests.conftest import Loop, upstream_spec, write_policy


def policy_file(folder: Path, route: str) -> Path:
    return write_policy(folder, {"a": upstream_spec("http://127.0.0.1:1")}, {route: {"candidates": ["a"]}})


def policy_metric(parts: Components) -> str:
    return next(line for line in parts.metrics.exposition().decode().splitlines()
                if line.startswith("switchyard_policy_info{"))


def test_while_it_runs_the_policy_is_served_and_after_it_nothing_is_left(loop: Loop, tmp_path: Path) -> None:
    parts = Components(Settings(policy=str(policy_file(tmp_path, "chat")), reload_interval_s=0))

    async def run() -> tuple[Runtime | None, bool, str]:
        async with lifespan(parts):
            runtime, reloading = parts.runtime, parts.reloader is not None
            shown = policy_metric(parts)
        return runtime, reloading, shown

    runtime, reloading, shown = loop.run(run())
    assert runtime is not None
    assert runtime.policy is parts.policy
    assert list(runtime.upstreams) == ["a"]
    assert reloading
    assert f'hash="{parts.policy.hash}"' in shown
    assert shown.endswith(" 1.0")
    assert (parts.runtime, parts.reloader) == (None, None)


def test_a_reload_swaps_in_a_new_runtime_and_a_broken_one_keeps_the_old(loop: Loop, tmp_path: Path) -> None:
    path = policy_file(tmp_path, "chat")
    parts = Components(Settings(policy=str(path), reload_interval_s=0))

    async def run() -> tuple[list[str], list[str], list[str]]:
        async with lifespan(parts):
            assert parts.reloader is not None
            assert parts.runtime is not None
            first = parts.runtime
            policy_file(tmp_path, "renamed")
            assert await parts.reloader.reload()
            second = parts.runtime
            assert second is not first
            assert second.policy is parts.policy
            write_policy(tmp_path, {"a": upstream_spec("http://127.0.0.1:1")}, {"chat": {"candidates": ["nope"]}})
            assert not await parts.reloader.reload()
            assert parts.runtime is second
            return list(first.policy.doc.models), list(second.policy.doc.models), [policy_metric(parts)]

    before, after, shown = loop.run(run())
    assert (before, after) == (["chat"], ["renamed"])
    assert f'hash="{parts.policy.hash}"' in shown[0]


async def forever() -> None:
    await asyncio.Event().wait()


def test_tasks_still_running_after_the_wait_are_cancelled() -> None:
    async def run() -> tuple[bool, bool]:
        quick = asyncio.create_task(asyncio.sleep(0))
        stuck = asyncio.create_task(forever())
        await _closed({quick, stuck}, 0.05)
        return quick.done() and not quick.cancelled(), stuck.cancelled()

    assert asyncio.run(run()) == (True, True)
