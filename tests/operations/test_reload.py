"""Hot reload: a changed policy is swapped in whole, a broken one refused, in-flight requests undisturbed."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any

import httpx
import yaml

from gateway.tools.standin import Fault
from tests.conftest import Loop, Stack, start_stack, wait_for
from tests.tools.cli.helpers import serve, stop

HELLO = [{"role": "user", "content": "Hello"}]


def reloading_stack(loop: Loop, tmp_path: Path) -> Stack:
    return start_stack(loop, tmp_path, settings={"reload_interval_s": 0.02})


def rewrite(tmp_path: Path, change: Any) -> None:
    path = tmp_path / "policy.yaml"
    doc = yaml.safe_load(path.read_text())
    change(doc)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def served_by(stack: Stack) -> str:
    client = stack.client()
    return str(client.chat.completions.with_raw_response.create(model="chat", messages=HELLO)
               .headers["x-switchyard-upstream"])


def metric(stack: Stack, line: str) -> bool:
    return line in httpx.get(stack.served.url + "/metrics").text


def test_a_changed_policy_is_served_without_a_restart(loop: Loop, tmp_path: Path) -> None:
    stack = reloading_stack(loop, tmp_path)
    old_hash = stack.gateway.policy.hash
    assert served_by(stack) == "primary"
    rewrite(tmp_path, lambda doc: doc["models"]["chat"].update(candidates=["fallback", "primary"]))
    wait_for(lambda: stack.gateway.policy.hash != old_hash, what="the reload")
    assert served_by(stack) == "fallback"
    assert metric(stack, 'switchyard_policy_reloads_total{result="ok"} 1.0')
    assert metric(stack, f'switchyard_policy_info{{hash="{stack.gateway.policy.hash}"}} 1.0')
    assert not metric(stack, f'switchyard_policy_info{{hash="{old_hash}"}}')


def test_a_broken_policy_is_refused_and_the_old_one_keeps_serving(loop: Loop, tmp_path: Path) -> None:
    stack = reloading_stack(loop, tmp_path)
    old_hash = stack.gateway.policy.hash
    rewrite(tmp_path, lambda doc: doc["models"]["chat"].update(candidates=["nowhere"]))
    wait_for(lambda: metric(stack, 'switchyard_policy_reloads_total{result="error"} 1.0'), what="the refusal")
    assert stack.gateway.policy.hash == old_hash
    assert served_by(stack) == "primary"


def test_an_inflight_request_finishes_on_the_policy_it_started_with(loop: Loop, tmp_path: Path) -> None:
    stack = reloading_stack(loop, tmp_path)
    stack.upstreams["primary"].faults.append(Fault(delay_s=0.5))
    result: dict[str, str] = {}
    thread = threading.Thread(target=lambda: result.update(first=served_by(stack)))
    thread.start()
    wait_for(lambda: bool(stack.upstreams["primary"].seen), what="the slow request to arrive")
    old_hash = stack.gateway.policy.hash
    rewrite(tmp_path, lambda doc: doc["models"]["chat"].update(candidates=["fallback"]))
    wait_for(lambda: stack.gateway.policy.hash != old_hash, what="the reload")
    assert served_by(stack) == "fallback"
    thread.join(timeout=10)
    assert result["first"] == "primary"


def test_sighup_reloads_a_running_server(loop: Loop, tmp_path: Path) -> None:
    from gateway.tools.standin import StandIn

    app = StandIn("primary")
    process, port = serve(tmp_path, loop.serve(app).url, "--reload-interval-s", "0")
    try:
        before = httpx.get(f"http://127.0.0.1:{port}/readyz").json()["policy"]
        rewrite(tmp_path, lambda doc: doc["models"]["chat"].update(default_max_tokens=99))
        process.send_signal(signal.SIGHUP)
        wait_for(lambda: httpx.get(f"http://127.0.0.1:{port}/readyz").json()["policy"] != before,
                 what="SIGHUP to reload the policy")
    finally:
        assert stop(process) == 0


def test_a_symlink_swapped_to_a_file_of_the_same_size_and_time_is_reloaded(loop: Loop, tmp_path: Path) -> None:
    stack = reloading_stack(loop, tmp_path)
    policy = tmp_path / "policy.yaml"
    before = policy.stat()
    text = policy.read_text()
    swapped = text.replace("candidates:\n    - primary\n    - fallback", "candidates:\n    - fallback\n    - primary")
    assert swapped != text
    assert len(swapped) == len(text)
    target = tmp_path / "swapped.yaml"
    target.write_text(swapped)
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    (tmp_path / "link.tmp").symlink_to(target)
    (tmp_path / "link.tmp").replace(policy)
    after = policy.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)  # all a stat() could see
    wait_for(lambda: served_by(stack) == "fallback", what="the swapped policy to be served")


def test_a_yaml_alias_bomb_is_refused_by_the_reloader_and_the_old_policy_keeps_serving(loop: Loop,
                                                                                        tmp_path: Path) -> None:
    from tests.routing.policy.test_loader import alias_bomb

    stack = reloading_stack(loop, tmp_path)
    old_hash = stack.gateway.policy.hash
    with (tmp_path / "policy.yaml").open("a") as policy:
        policy.write(alias_bomb())
    wait_for(lambda: metric(stack, 'switchyard_policy_reloads_total{result="error"} 1.0'), what="the refusal")
    assert stack.gateway.policy.hash == old_hash
    assert served_by(stack) == "primary"
