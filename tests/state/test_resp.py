"""The pipelined Redis connection, against a private redis-server: replies in order, errors per command,
log-in and database from the URL, and a connection that heals after it is lost or its peer hangs."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import redis

from gateway.state.base import StateError
from gateway.state.redis import RedisBackend
from gateway.state.resp import Address, AuthenticationError, Connection, ConnectionFailed, ReplyError, encode
from tests.certificates import authority, certificate

if TYPE_CHECKING:
    from tests.redis_server import RedisServer

pytest_plugins = ["tests.redis_server"]


@pytest.mark.parametrize(("url", "expected"), [
    ("redis://10.0.0.5:6380/3", Address(host="10.0.0.5", port=6380, db=3)),
    ("redis://redis", Address(host="redis")),
    ("redis://:s%40cret@redis:6379/0", Address(host="redis", password="s@cret")),
    ("redis://alice:pw@redis/1", Address(host="redis", db=1, username="alice", password="pw")),
    ("rediss://cache.example.com:6380", Address(host="cache.example.com", port=6380, tls=True)),
    ("unix:///run/redis.sock?db=2", Address(path="/run/redis.sock", db=2)),
    ("rediss://r:6380/0?ssl_ca_certs=/etc/ca.pem&ssl_certfile=/etc/c.pem&ssl_keyfile=/etc/c%2B.key",
     Address(host="r", port=6380, tls=True, ca_file="/etc/ca.pem", cert_file="/etc/c.pem", key_file="/etc/c+.key")),
])
def test_an_url_gives_the_address_and_the_log_in(url: str, expected: Address) -> None:
    assert Address.parse(url) == expected


def test_an_url_of_another_scheme_is_refused() -> None:
    with pytest.raises(ValueError, match="not http://"):
        Address.parse("http://redis:6379")


def test_a_command_is_encoded_as_resp() -> None:
    assert encode(["SET", "k", 12, b"\x00v"]) == b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n12\r\n$2\r\n\x00v\r\n"


async def test_each_batch_gets_its_own_replies_in_order(redis_url: str) -> None:
    connection = Connection(redis_url, 1.0)
    try:
        batches = [[["ECHO", f"{i}-{j}"] for j in range(i % 5 + 1)] for i in range(200)]
        results = await asyncio.gather(*(connection.execute(batch) for batch in batches))
        assert results == [[f"{i}-{j}".encode() for j in range(i % 5 + 1)] for i in range(200)]
    finally:
        await connection.aclose()


async def test_a_command_that_fails_leaves_the_others_standing(redis_url: str) -> None:
    connection = Connection(redis_url, 1.0)
    try:
        ok, failed, value = await connection.execute([["SET", "k", "v"], ["INCR", "k"], ["GET", "k"]])
        assert (ok, value) == (b"OK", b"v")
        assert isinstance(failed, ReplyError)
        assert "not an integer" in str(failed)
    finally:
        await connection.aclose()


async def test_the_url_chooses_the_database(redis_server: RedisServer, redis_url: str) -> None:
    connection = Connection(redis_server.url(db=3), 1.0)
    try:
        await connection.execute([["SET", "where", "three"]])
    finally:
        await connection.aclose()
    with redis_server.client(db=3) as three, redis_server.client(db=0) as zero:
        assert (three.get("where"), zero.get("where")) == (b"three", None)


@pytest.fixture
def locked(own_redis: RedisServer) -> Iterator[RedisServer]:
    """own_redis with a password for the default user and a user alice of her own (both lifted after)."""
    with own_redis.client() as admin:
        admin.execute_command("ACL", "SETUSER", "alice", "on", ">alice-pw", "~*", "+@all")
        admin.config_set("requirepass", "s3cret")
    yield own_redis
    with redis.Redis(port=own_redis.port, password="s3cret") as admin:
        admin.config_set("requirepass", "")


async def test_a_password_and_a_user_from_the_url_log_in(locked: RedisServer) -> None:
    for url in (f"redis://:s3cret@127.0.0.1:{locked.port}/0", f"redis://alice:alice-pw@127.0.0.1:{locked.port}/0"):
        connection = Connection(url, 1.0)
        try:
            assert await connection.execute([["PING"]]) == [b"PONG"]
        finally:
            await connection.aclose()


@pytest.mark.parametrize("login", [":guessed-pw@", "alice:guessed-pw@", ""])
async def test_a_wrong_or_missing_password_is_an_authentication_error_that_does_not_repeat_it(
        locked: RedisServer, login: str) -> None:
    connection = Connection(f"redis://{login}127.0.0.1:{locked.port}/0", 1.0)
    try:
        with pytest.raises(AuthenticationError, match="refused the log-in") as caught:
            await connection.execute([["PING"]])
        assert "guessed-pw" not in str(caught.value)
    finally:
        await connection.aclose()


async def test_an_authentication_error_reaches_the_state_log_by_its_name(locked: RedisServer) -> None:
    backend = RedisBackend(f"redis://:guessed-pw@127.0.0.1:{locked.port}/0", timeout_s=1.0)
    try:
        with pytest.raises(StateError, match="AuthenticationError"):
            await backend.ping()
    finally:
        await backend.close()


async def test_nothing_listening_fails_at_once() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]  # bound, never listening: connections are refused
        connection = Connection(f"redis://127.0.0.1:{port}/0", 1.0)
        with pytest.raises(ConnectionFailed, match="cannot connect"):
            await connection.execute([["PING"]])
        await connection.aclose()


async def test_a_hung_server_fails_the_batch_in_time_and_a_new_connection_serves_after(own_redis: RedisServer) -> None:
    connection = Connection(own_redis.url(), 1.0)
    try:
        assert await connection.execute([["PING"]]) == [b"PONG"]
        own_redis.freeze()
        with pytest.raises(ConnectionFailed, match="no reply from Redis within 1000 ms"):
            await connection.execute([["INCR", "n"]])
        own_redis.thaw()
        assert await connection.execute([["GET", "n"]]) == [b"1"]  # the INCR ran late; its reply was not mistaken
        assert await connection.execute([["INCR", "n"]]) == [2]
    finally:
        own_redis.thaw()
        await connection.aclose()


async def test_a_submitted_batch_hands_its_replies_to_its_callback(redis_url: str) -> None:
    connection = Connection(redis_url, 1.0)
    try:
        assert not connection.submit(encode(["PING"]), 1, print)  # nothing open yet: nothing sent
        await connection.execute([["DEL", "n"]])
        got: asyncio.Queue[object] = asyncio.Queue()
        assert connection.submit(encode(["INCR", "n"]) + encode(["INCR", "n"]), 2, got.put_nowait)
        assert await got.get() == [1, 2]
    finally:
        await connection.aclose()


async def test_each_batch_waits_at_most_the_timeout_from_its_own_sending(own_redis: RedisServer) -> None:
    connection = Connection(own_redis.url(), 0.5)
    try:
        assert await connection.execute([["PING"]]) == [b"PONG"]
        await asyncio.sleep(0.4)  # the watch armed for the first batch is still up when the next is sent
        own_redis.freeze()
        started = time.monotonic()
        got: asyncio.Queue[object] = asyncio.Queue()
        assert connection.submit(encode(["PING"]), 1, got.put_nowait)
        with pytest.raises(ConnectionFailed, match="no reply from Redis within 500 ms"):
            await connection.execute([["PING"]])  # a second batch behind it fails with it
        failed = await got.get()
        assert isinstance(failed, ConnectionFailed)
        assert time.monotonic() - started >= 0.45  # its own half second, not what was left of the first's
        own_redis.thaw()
        assert await connection.execute([["PING"]]) == [b"PONG"]  # a new connection
    finally:
        own_redis.thaw()
        await connection.aclose()


async def test_a_killed_connection_fails_what_waits_on_it_and_is_made_again(own_redis: RedisServer) -> None:
    connection = Connection(own_redis.url(), 1.0)
    try:
        assert await connection.execute([["CLIENT", "SETNAME", "victim"]]) == [b"OK"]
        with own_redis.client() as admin:
            admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        replies: list[object] = []
        for _ in range(2):  # the first call may still find the old connection before its loss is noticed
            try:
                replies = await connection.execute([["CLIENT", "GETNAME"]])
                break
            except ConnectionFailed:
                continue
        assert replies == [None]  # a new connection: it has no name
    finally:
        await connection.aclose()


async def test_a_restarted_server_is_reconnected_to(own_redis: RedisServer) -> None:
    connection = Connection(own_redis.url(), 1.0)
    try:
        await connection.execute([["SET", "k", "before"]])
        own_redis.stop(save=True)
        with pytest.raises(ConnectionFailed):
            await connection.execute([["GET", "k"]])
        own_redis.start()
        assert await connection.execute([["GET", "k"]]) == [b"before"]
    finally:
        await connection.aclose()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """A private redis-server that speaks only TLS and asks every client for a certificate from a private CA."""
    folder = tmp_path_factory.mktemp("tls-redis")
    authority(folder)
    certificate(folder, "server")
    certificate(folder, "client")
    port = _free_port()
    server = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--port", "0", "--tls-port", str(port),
         "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--tls-cert-file", "server.pem",
         "--tls-key-file", "server.key",
         "--tls-ca-cert-file", "ca.pem", "--tls-auth-clients", "yes", "--dir", str(folder)],
        cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while server.poll() is None and time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.01)
        else:
            pytest.fail("the TLS redis-server did not start")
        yield port, folder
    finally:
        server.terminate()
        server.wait(timeout=10)


async def test_rediss_verifies_the_server_by_a_private_ca_and_presents_a_client_certificate(
        tls_redis: tuple[int, Path]) -> None:
    port, folder = tls_redis
    url = (f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={folder / 'ca.pem'}&ssl_certfile={folder / 'client.pem'}"
           f"&ssl_keyfile={folder / 'client.key'}")
    connection = Connection(url, 2.0)
    try:
        assert await connection.execute([["PING"]]) == [b"PONG"]
    finally:
        await connection.aclose()


@pytest.mark.parametrize("query", ["", "?ssl_ca_certs={ca}"])
async def test_rediss_fails_without_the_ca_or_without_a_client_certificate(tls_redis: tuple[int, Path],
                                                                          query: str) -> None:
    port, folder = tls_redis
    connection = Connection(f"rediss://127.0.0.1:{port}/0" + query.format(ca=folder / "ca.pem"), 2.0)
    try:
        with pytest.raises(ConnectionFailed):
            await connection.execute([["PING"]])
    finally:
        await connection.aclose()


@pytest.mark.parametrize("tls", [False, True], ids=["redis", "rediss"])
async def test_a_closed_connection_has_closed_its_socket_when_aclose_returns(
        tls: bool, request: pytest.FixtureRequest) -> None:
    """Its owner may close the event loop next: a socket left for a later loop iteration (or for a TLS goodbye the
    peer is slow to answer) would never be closed."""
    if tls:
        port, folder = request.getfixturevalue("tls_redis")
        url = (f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={folder / 'ca.pem'}&ssl_certfile={folder / 'client.pem'}"
               f"&ssl_keyfile={folder / 'client.key'}")
    else:
        url = request.getfixturevalue("redis_url")
    connection = Connection(url, 2.0)
    assert await connection.execute([["PING"]]) == [b"PONG"]
    sock = connection._protocol._transport.get_extra_info("socket")  # type: ignore[union-attr]
    await connection.aclose()
    assert sock.fileno() == -1


def test_tls_files_need_a_rediss_url() -> None:
    with pytest.raises(ValueError, match="ssl_ca_certs need a rediss:// URL"):
        Address.parse("redis://redis:6379/0?ssl_ca_certs=/etc/ca.pem")
