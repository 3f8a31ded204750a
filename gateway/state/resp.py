"""A lean pipelined Redis connection: commands are packed and replies parsed by hiredis, in C.

One connection carries every batch in order, and each batch waits on one future. redis-py's pipeline
cost the gateway about 70 µs of CPU per request (an admission and a settlement); this costs about 10.
A batch that gets no reply in time drops the connection, so a dead peer is never waited on twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import hiredis

Arg = str | bytes | int
TLS_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")


class ReplyError(Exception):
    """Redis answered a command with an error (the batch's other replies stand)."""


class ConnectionFailed(Exception):
    """The connection could not be made, or was lost with replies outstanding."""


class AuthenticationError(ConnectionFailed):
    """Redis refused the log-in: a wrong or missing password or user in the URL, or a user without the rights."""


AUTH_REFUSALS = ("WRONGPASS", "NOAUTH", "NOPERM", "ERR AUTH", "ERR invalid password")


@dataclass(frozen=True, slots=True)
class Address:
    """Where Redis is and how to log in, read from a redis://, rediss:// or unix:// URL."""

    host: str = "127.0.0.1"
    port: int = 6379
    path: str = ""
    db: int = 0
    username: str = ""
    password: str = ""
    tls: bool = False
    ca_file: str = ""  # the authority the server's certificate must chain to, instead of the system's
    cert_file: str = ""  # a client certificate, for servers that ask for one
    key_file: str = ""

    @classmethod
    def parse(cls, url: str) -> Address:
        """Read a Redis URL: redis://[[user]:password@]host[:port][/db], unix:///path?db=N, or rediss://... for TLS,
        with ?ssl_ca_certs=PATH&ssl_certfile=PATH&ssl_keyfile=PATH as redis-py names them."""
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"a Redis URL starts with redis://, rediss:// or unix://, not {parts.scheme or '?'}://")
        query = {name: unquote(value) for name, _, value in (pair.partition("=") for pair in parts.query.split("&"))
                 if value}
        tls_options = [query.get(name, "") for name in TLS_OPTIONS]
        if any(tls_options) and parts.scheme != "rediss":
            raise ValueError(f"{', '.join(n for n in TLS_OPTIONS if query.get(n))} need a rediss:// URL")
        db = parts.path.strip("/") if parts.scheme != "unix" else query.get("db", "0")
        try:
            port = parts.port or 6379
        except ValueError:
            raise ValueError("the Redis URL's port is not a number") from None
        if not (db or "0").isdigit():
            raise ValueError(f"the Redis URL's database must be a number, not {db!r}")
        return cls(host=parts.hostname or "127.0.0.1", port=port, path=parts.path if parts.scheme == "unix" else "",
                   db=int(db or 0), username=unquote(parts.username or ""), password=unquote(parts.password or ""),
                   tls=parts.scheme == "rediss", ca_file=tls_options[0], cert_file=tls_options[1],
                   key_file=tls_options[2])

    def tls_context(self) -> ssl.SSLContext | None:
        """The TLS settings of a rediss:// address (OSError when a file named in the URL cannot be read)."""
        if not self.tls:
            return None
        context = ssl.create_default_context(cafile=self.ca_file or None)
        if self.cert_file:
            context.load_cert_chain(self.cert_file, self.key_file or None)
        return context


def encode(args: Sequence[Arg]) -> bytes:
    """One command in RESP."""
    packed: bytes = hiredis.pack_command(tuple(args))  # type: ignore[arg-type]  # its stub takes one-tuples only
    return packed


Done = Callable[[list[Any] | Exception], None]  # handed a batch's replies, or why there will be none


class _Batch:
    __slots__ = ("deadline", "done", "left", "replies")

    def __init__(self, done: Done, count: int, deadline: float) -> None:
        self.done, self.left, self.deadline = done, count, deadline
        self.replies: list[Any] = []


class Protocol(asyncio.Protocol):
    """Writes batches of commands and hands each batch its replies, in order; a batch with no reply within timeout_s
    drops the connection.

    One timer watches the oldest batch (the first to run out of time), so a batch costs no timer of its own.
    """

    def __init__(self, timeout_s: float = 1.0) -> None:
        self._reader = hiredis.Reader(replyError=ReplyError)
        self._waiting: deque[_Batch] = deque()
        self._transport: asyncio.Transport | None = None
        self._gone = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._timeout_s = timeout_s
        self._watch: asyncio.TimerHandle | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        while True:
            try:
                reply = self._reader.gets()
            except hiredis.ProtocolError:
                self.close()
                return
            if reply is False:
                return
            if not self._waiting:  # a reply nobody asked for: the stream is out of step
                self.close()
                return
            batch = self._waiting[0]
            batch.replies.append(reply)
            batch.left -= 1
            if not batch.left:
                self._waiting.popleft()
                batch.done(batch.replies)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionFailed("connection to Redis lost"))
        self._gone.set()

    def _fail(self, error: ConnectionFailed) -> None:
        """Fail every batch still waiting, for good: nothing more is read on this connection."""
        self.lost = True
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        while self._waiting:
            self._waiting.popleft().done(error)

    def submit(self, payload: bytes, count: int, done: Done) -> None:
        """Write count commands encoded in payload; done gets their replies, or the ConnectionFailed that ended them."""
        assert self._transport is not None
        self._waiting.append(_Batch(done, count, self._loop.time() + self._timeout_s))
        if self._watch is None:
            self._watch = self._loop.call_at(self._waiting[-1].deadline, self._check)
        self._transport.write(payload)

    def send(self, payload: bytes, count: int) -> asyncio.Future[list[Any]]:
        """Write count commands encoded in payload; the future gets their replies."""
        future: asyncio.Future[list[Any]] = self._loop.create_future()
        self.submit(payload, count, partial(_settle_future, future))
        return future

    def _check(self) -> None:
        """The watch is up: drop the connection if the oldest batch is out of time, else watch it until it is."""
        self._watch = None
        if not self._waiting or self.lost:
            return
        deadline = self._waiting[0].deadline
        if deadline > self._loop.time():
            self._watch = self._loop.call_at(deadline, self._check)
            return
        self._fail(ConnectionFailed(f"no reply from Redis within {self._timeout_s * 1000:.0f} ms"))
        self.close()

    def close(self) -> None:
        """Drop the connection; whatever is outstanding fails."""
        if self._transport is not None:
            self._transport.close()

    async def closed(self, timeout_s: float) -> None:
        """Close and return once the socket is closed: a TLS goodbye gets timeout_s, then the socket is cut."""
        self.close()
        try:
            async with asyncio.timeout(timeout_s):
                await self._gone.wait()
        except TimeoutError:
            if self._transport is not None:
                self._transport.abort()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await self._gone.wait()


class Connection:
    """A Redis connection made on first use and again after it is lost; every wait on it is bounded."""

    def __init__(self, url: str, timeout_s: float) -> None:
        self._address = Address.parse(url)
        self._tls = self._address.tls_context()
        self._timeout_s = timeout_s
        self._protocol: Protocol | None = None
        self._connecting: asyncio.Task[Protocol] | None = None

    async def execute(self, commands: Sequence[Sequence[Arg]]) -> list[Any]:
        """Send commands in one write; their replies in order (ReplyError instances for the ones that failed)."""
        return await self.send(b"".join(encode(command) for command in commands), len(commands))

    async def send(self, payload: bytes, count: int) -> list[Any]:
        """Send count pre-encoded commands; their replies in order."""
        protocol = self._protocol
        if protocol is None or protocol.lost:
            protocol = await self._connect()
        return await protocol.send(payload, count)

    def submit(self, payload: bytes, count: int, done: Done) -> bool:
        """Send count pre-encoded commands on the open connection, done to get their replies; False when none is
        open (then nothing is sent)."""
        protocol = self._protocol
        if protocol is None or protocol.lost:
            return False
        protocol.submit(payload, count, done)
        return True

    async def _connect(self) -> Protocol:
        if self._connecting is None or self._connecting.done():
            self._connecting = asyncio.get_running_loop().create_task(self._open())
            self._connecting.add_done_callback(_retrieve)
        return await asyncio.shield(self._connecting)

    async def _open(self) -> Protocol:
        address, loop = self._address, asyncio.get_running_loop()
        protocol: Protocol | None = None
        factory = partial(Protocol, self._timeout_s)
        try:
            async with asyncio.timeout(self._timeout_s):
                if address.path:
                    _, protocol = await loop.create_unix_connection(factory, address.path)
                else:
                    _, protocol = await loop.create_connection(factory, address.host, address.port, ssl=self._tls)
                setup = self._setup()
                replies = await protocol.send(b"".join(encode(c) for c in setup), len(setup))
        except (OSError, TimeoutError) as exc:
            if protocol is not None:
                protocol.close()
            raise ConnectionFailed(f"cannot connect to Redis: {type(exc).__name__}") from exc
        except asyncio.CancelledError:  # closed for good while connecting: the socket must not outlive it
            if protocol is not None:
                protocol.close()
            raise
        refused = [reply for reply in replies if isinstance(reply, ReplyError)]
        if refused:
            protocol.close()
            if str(refused[0]).startswith(AUTH_REFUSALS):
                raise AuthenticationError(f"Redis refused the log-in (check the user and password in the Redis "
                                          f"URL): {refused[0]}")
            raise ConnectionFailed(f"Redis refused the connection's set-up: {refused[0]}")
        self._protocol = protocol
        return protocol

    def _setup(self) -> list[list[Arg]]:
        address, commands = self._address, list[list[Arg]]()
        if address.password:
            commands.append(["AUTH", *([address.username] if address.username else []), address.password])
        if address.db:
            commands.append(["SELECT", address.db])
        commands.append(["PING"])  # a server that wants a password the URL lacks says NOAUTH now, not mid-request
        return commands

    def drop(self) -> None:
        """Close the connection: replies still owed on it would arrive out of step with new requests."""
        if self._protocol is not None:
            self._protocol.close()
            self._protocol = None

    async def aclose(self) -> None:
        """Close the connection for good, returning once its socket is closed (a caller may close the loop next)."""
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()
            await asyncio.gather(self._connecting, return_exceptions=True)
        protocol, self._protocol = self._protocol, None
        if protocol is not None:
            await protocol.closed(self._timeout_s)


def _settle_future(future: asyncio.Future[list[Any]], replies: list[Any] | Exception) -> None:
    """Hand a batch's replies (or its failure) to the future that waits for them, unless it was given up."""
    if future.done():
        return
    if isinstance(replies, Exception):
        future.set_exception(replies)
    else:
        future.set_result(replies)


def _retrieve(task: asyncio.Task[Protocol]) -> None:
    """Mark a failed connection attempt's error as seen: the callers that awaited it were told already."""
    if not task.cancelled():
        task.exception()
