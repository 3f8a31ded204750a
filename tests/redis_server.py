"""A private redis-server for the tests: on a free loopback port, never the machine's Redis on 6379.

`redis_server` is one server for the whole session (tests flush it through `redis_url`); `own_redis` is a
server of one test's own, for tests that stop, freeze and restart it. A module uses them as a plugin:

    pytest_plugins = ["tests.redis_server"]

(importing this module directly, before pytest has, trips its assertion rewriting: import RedisServer for
annotations only, under TYPE_CHECKING).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

START_DEADLINE_S = 30.0  # a deadline, not an expectation: a loaded machine starts slowly


def redis_server_binary() -> str:
    """The redis-server on PATH; the tests that need one fail saying how to get it when there is none."""
    found = shutil.which("redis-server")
    if found is None:
        pytest.fail("redis-server is not on PATH: install Redis 6 or later (e.g. apt-get install redis-server)")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """One redis-server process: started, stopped (optionally saving its data first), frozen and restarted."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def client(self, db: int = 0) -> redis.Redis:
        """A plain client that never retries (redis-py's default backs off for seconds on a dead server)."""
        return redis.Redis(host="127.0.0.1", port=self.port, db=db, socket_timeout=2, socket_connect_timeout=2,
                           retry=Retry(NoBackoff(), 0))

    def start(self) -> None:
        """Start on a free port (the same port again on a restart) and wait for PING to be answered."""
        if self.port:
            self._launch()
            return
        for _ in range(5):  # a port found free may be taken before redis binds it: try another
            self.port = free_port()
            if self._launch(strict=False):
                return
        raise RuntimeError(f"redis-server did not start; see {self.folder / 'redis.log'}")

    def _launch(self, strict: bool = True) -> bool:
        assert self.process is None, "already running"
        self.process = subprocess.Popen(
            [redis_server_binary(), "--save", "", "--appendonly", "no", "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.folder), "--dbfilename", "dump.rdb", "--logfile", str(self.folder / "redis.log"),
             "--daemonize", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + START_DEADLINE_S
        with self.client() as probe:
            while self.process.poll() is None and time.monotonic() < deadline:
                try:
                    if probe.ping():
                        return True
                except redis.RedisError:
                    time.sleep(0.01)
        self.process.kill()
        self.process.wait()
        self.process = None
        if strict:
            raise RuntimeError(f"redis-server did not answer PING on port {self.port}; see {self.folder}/redis.log")
        return False

    def stop(self, save: bool = False) -> None:
        """Shut the server down; with save, its data is written first and loaded again by the next start."""
        if self.process is None:
            return
        self.thaw()
        try:
            with self.client() as control:
                control.shutdown(save=save, nosave=not save)
        except redis.ConnectionError:
            pass  # the expected answer: the server went away
        except redis.RedisError:
            self.process.kill()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def freeze(self) -> None:
        """SIGSTOP: the port still accepts connections but nothing is answered, like a hung server."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)

    def flush(self) -> None:
        with self.client() as control:
            control.flushall()


_session: RedisServer | None = None


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """The session's private server; one even when several modules import this fixture."""
    global _session
    if _session is None or _session.process is None:
        _session = RedisServer(tmp_path_factory.mktemp("redis"))
        _session.start()
    yield _session
    _session.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session server's URL, emptied for this test."""
    redis_server.flush()
    return redis_server.url()


@pytest.fixture
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A server of this test's own, free to be stopped, frozen and restarted."""
    server = RedisServer(tmp_path_factory.mktemp("own-redis"))
    server.start()
    yield server
    server.stop()
