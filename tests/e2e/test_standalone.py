"""The repository stands alone and its container and compose files are safe to try (issue 17, points 15-17).

Nothing refers to files outside the checkout; the benchmark's own mock upstream and floor proxy speak the
OpenAI wire format the gateway is measured with; the image can hold the litellm extra; compose publishes
on loopback only; the tests find redis-server on PATH.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from tests.conftest import Loop

ROOT = Path(__file__).resolve().parents[2]
OUTSIDE = re.compile(r"\.\./" + "shared|" + "shared/" + "(design|bench)")  # split so this file does not match
CHECKED = ("README.md", "pyproject.toml", ".ci", "bench", "deploy", "docs", "gateway", "policies", "scripts", "tests")


def checked_files() -> list[Path]:
    files: list[Path] = []
    for name in CHECKED:
        path = ROOT / name
        inside = [p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
        files += [path] if path.is_file() else inside
    return files


def test_nothing_refers_to_files_outside_the_repository() -> None:
    found = [f"{path.relative_to(ROOT)}:{n}" for path in checked_files()
             for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1) if OUTSIDE.search(line)]
    assert found == []


def bench_module(name: str) -> ModuleType:
    """bench/NAME.py, imported as bench/run.py imports it (bench/ is not a package)."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture
def floor_url(loop: Loop) -> str:
    """The benchmark's floor proxy in front of its mock upstream (5 content events a stream)."""
    servers = bench_module("servers")
    mock = loop.serve(servers.Mock(chunks=5))
    return loop.serve(servers.Floor(mock.url)).url


def test_the_bench_floor_and_mock_answer_the_openai_client(loop: Loop, floor_url: str) -> None:
    client = loop.client(f"{floor_url}/v1", "sk-bench")
    answer = client.chat.completions.create(model="bench-model", messages=[{"role": "user", "content": "hi"}])
    assert answer.choices[0].message.content == "lorem " * 5
    assert answer.usage is not None
    assert answer.usage.completion_tokens == 5
    chunks = list(client.chat.completions.create(model="bench-model", messages=[{"role": "user", "content": "hi"}],
                                                 stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "lorem " * 5
    assert chunks[-1].usage is not None


def test_the_bench_load_counts_every_frame_of_every_stream(floor_url: str) -> None:
    load = bench_module("load")
    seen = load.streams(floor_url, "bench-model", "sk-bench", clients=3, per_client=2)
    assert seen.bad == 0
    assert len(seen.ttft_s) == 6
    assert seen.frames == 6 * (1 + 5 + 1 + 1 + 1)  # role, content, finish, usage, [DONE]


def test_the_bench_plain_load_without_wrk_counts_answers_and_their_status(floor_url: str) -> None:
    load = bench_module("load")
    seen = load.plain(floor_url, "bench-model", "sk-bench", connections=4, seconds=1, core="0", wrk=False)
    assert seen.rps > 0
    assert seen.p50_ms is not None
    assert seen.p99_ms is not None
    assert seen.p50_ms <= seen.p99_ms
    assert seen.non2xx == 0


def test_the_image_can_be_built_with_the_litellm_extra() -> None:
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert re.search(r'^ARG EXTRAS=""$', dockerfile, re.M)
    assert 'pip install --no-cache-dir ".${EXTRAS:+[${EXTRAS}]}"' in dockerfile
    readme = (ROOT / "deploy" / "README.md").read_text()
    assert "--build-arg EXTRAS=litellm" in readme
    assert "host.docker.internal" in readme


def test_compose_publishes_every_port_on_loopback_only() -> None:
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    published = {name: service.get("ports", []) for name, service in compose["services"].items()}
    assert published["switchyard"] == ["127.0.0.1:8080:8080"]
    for name, ports in published.items():
        for port in ports:
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on every address"


def test_the_tests_find_redis_server_on_path_and_readme_says_so() -> None:
    fixed_path = "/usr/bin/" + "redis-server"  # split so this file does not match
    for path in (ROOT / "tests").rglob("*.py"):
        assert fixed_path not in path.read_text(), path
    readme = (ROOT / "README.md").read_text()
    assert "`redis-server`" in readme
    assert "found on `PATH`" in readme
