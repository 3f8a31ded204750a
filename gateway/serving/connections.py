"""Limits on client connections, below the ASGI app: deadlines, a cap on open connections, header size and count.

uvicorn's httptools protocol arms no timer on a connection until it has sent a first response, lets httptools
buffer a header of any size and any number of headers, and its `limit_concurrency` answers 503 while idle
sockets keep their file descriptors. `GuardedProtocol` is that protocol with, per connection, one deadline
for whichever phase it is in:

    idle     (no request begun)     keepalive_s, then closed
    headers  (first byte to end)    header_timeout_s, then 408 and closed
    body     (end of headers to end) body_timeout_s, then 408 and closed
    serving  (the app has it)        no deadline (the policy's deadlines apply)

and a cap on open connections per process: a new one closes the longest-idle connection (one with no request
in progress) to make room; when every connection is serving, the request on the new one gets 503. It
subclasses uvicorn internals (callbacks, `cycle`), so pyproject.toml pins the uvicorn range it was tested on.
"""

from __future__ import annotations

import asyncio
import http
import logging
import resource
from dataclasses import dataclass
from typing import Any

import httptools
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from gateway.errors import GatewayError, InvalidRequest
from gateway.inbound.openai import error_body

logger = logging.getLogger("switchyard.connections")
IDLE, HEADERS, BODY, SERVING, CLOSED = "idle", "headers", "body", "serving", "closed"
LINGER_S = 1.0  # how long a refused connection is read (and dropped) before it is closed


@dataclass(frozen=True)
class SocketLimits:
    """How long a client may take and how much it may send before the app sees its request."""

    header_timeout_s: float = 10.0
    body_timeout_s: float = 60.0
    keepalive_s: float = 5.0
    max_connections: int = 0  # 0: half this process's open-file limit, the rest left for upstreams and files
    max_header_bytes: int = 32 * 1024  # the request line and every header's name and value
    max_headers: int = 100

    def connection_cap(self) -> int:
        """The cap on open connections, resolved from the open-file limit when not given."""
        if self.max_connections > 0:
            return self.max_connections
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        return max(16, (soft if soft != resource.RLIM_INFINITY else 65536) // 2)


class ConnectionGuard:
    """The open connections of one server, and which of them have no request in progress (oldest first)."""

    def __init__(self, limits: SocketLimits) -> None:
        self.limits = limits
        self.cap = limits.connection_cap()
        self.open: set[GuardedProtocol] = set()
        self._idle: dict[GuardedProtocol, None] = {}
        self._warned = False

    def opened(self, connection: GuardedProtocol) -> None:
        """Count a new connection; over the cap, close the longest-idle one."""
        self.open.add(connection)
        self._idle[connection] = None
        if len(self.open) > self.cap:
            self._make_room(connection)

    def admit(self, connection: GuardedProtocol) -> bool:
        """Whether a connection whose request headers are in may hand the request to the app."""
        self._idle.pop(connection, None)
        return len(self.open) <= self.cap or self._make_room(connection)

    def idle(self, connection: GuardedProtocol) -> None:
        """Mark a connection as having no request in progress (it may be closed to make room)."""
        if connection in self.open:
            self._idle[connection] = None

    def closed(self, connection: GuardedProtocol) -> None:
        """Forget a connection; once well below the cap, the next time it is reached is logged again."""
        self.open.discard(connection)
        self._idle.pop(connection, None)
        if self._warned and len(self.open) < self.cap // 2:
            self._warned = False

    def _make_room(self, newcomer: GuardedProtocol) -> bool:
        if not self._warned:
            self._warned = True
            logger.warning("%d client connections open, the cap (--max-connections): idle connections are closed "
                           "to make room, and requests get 503 while every connection is serving one", self.cap)
        victim = next((c for c in self._idle if c is not newcomer), None)
        if victim is None:
            return False
        self.closed(victim)
        victim.transport.close()
        return True


class GatewayConfig(uvicorn.Config):
    """uvicorn's config with the guarded httptools protocol and the limits it enforces."""

    def __init__(self, app: Any, limits: SocketLimits, **options: Any) -> None:
        super().__init__(app, http=GuardedProtocol, ws="none", **options)
        self.guard = ConnectionGuard(limits)


class _Refused(Exception):
    """Raised in a parser callback to stop parsing a request that is refused."""


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with deadlines, a connection cap and limits on headers."""

    def __init__(self, config: uvicorn.Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        assert isinstance(config, GatewayConfig)
        self.guard = config.guard
        self.limits = config.guard.limits
        self._phase = IDLE
        self._timer: asyncio.TimerHandle | None = None
        self._deadline: float | None = None  # loop time; None while the app has the request
        self._header_wire = 0  # bytes received while the headers were incomplete
        self._read = 0  # the size of the read being parsed
        self._spanned = False  # whether the headers being parsed began in an earlier read
        self._begun = False  # whether a request began in the read being parsed
        self._max_headers = self.limits.max_headers  # read for every request: one attribute, not two
        self._max_header_bytes = self.limits.max_header_bytes
        self._refusal: GatewayError | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.guard.opened(self)
        self._arm(self.limits.keepalive_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._phase = CLOSED
        self._cancel_timer()
        self.guard.closed(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._phase == CLOSED:
            return
        reading_headers = self._phase == HEADERS  # only a read wholly inside a request's headers is counted:
        self._begun = False  # the read a request begins in may hold earlier pipelined requests and their bodies
        self._read = len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self._refusal is not None:
                self._refuse(self._refusal)
                return
            self.logger.warning("Invalid HTTP request received.")
            self.send_400_response("Invalid HTTP request received.")
            return
        except httptools.HttpParserUpgrade:
            self._unsupported_upgrade_warning()
        if self._phase == HEADERS:  # this read ended inside a request's headers (rare but for slow clients)
            self._spanned = True
            if reading_headers and not self._begun:
                self._header_wire += len(data)
            if self._header_wire > self._max_header_bytes or self._headers_over():
                self._refuse(self._too_large())

    def on_message_begin(self) -> None:
        HttpToolsProtocol.on_message_begin(self)
        self._phase = HEADERS
        self._begun = True
        self._header_wire = 0
        self._spanned = False
        self._arm(self.limits.header_timeout_s)

    def on_headers_complete(self) -> None:
        # Headers are counted here, and when a read ends inside them, not in a callback per header: headers that
        # began in this read are no longer than it, which is all most requests need checked.
        if (len(self.headers) > self._max_headers
                or ((self._spanned or self._read > self._max_header_bytes) and self._headers_over())):
            self._stop(self._too_large())
        if not self.guard.admit(self):
            self._stop(GatewayError(f"the gateway is at its limit of {self.guard.cap} connections; retry shortly",
                                    status=503, code="too_many_connections"))
        self._phase = BODY
        self._arm(self.limits.body_timeout_s)
        HttpToolsProtocol.on_headers_complete(self)

    def on_message_complete(self) -> None:
        HttpToolsProtocol.on_message_complete(self)
        if self.cycle.response_complete:  # answered before its body was in (a 413, say): idle now
            self._go_idle()
        else:
            self._phase = SERVING
            self._disarm()

    def on_response_complete(self) -> None:
        # uvicorn's own, but for its keep-alive timer: the keep-alive deadline is ours (see _go_idle).
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
        elif self._phase == SERVING:
            self._go_idle()

    def _go_idle(self) -> None:
        self._phase = IDLE
        self.guard.idle(self)
        self._arm(self.limits.keepalive_s)

    def _headers_over(self) -> bool:
        """Whether the request line and headers parsed so far pass a limit."""
        if len(self.headers) > self._max_headers:
            return True
        return len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers) > self._max_header_bytes

    def _too_large(self) -> GatewayError:
        if len(self.headers) > self._max_headers:
            message = f"the request has more than {self._max_headers} headers"
        else:
            message = f"the request line and headers are over {self._max_header_bytes} bytes"
        return InvalidRequest(message, status=431, code="request_header_fields_too_large")

    def _stop(self, error: GatewayError) -> None:
        self._refusal = error
        raise _Refused()

    def _arm(self, seconds: float) -> None:
        """Set the deadline of the phase begun now.

        Arming a timer costs about 2 µs, three phases a request: the timer already set is kept when it fires no
        later than the new deadline, and on firing early it re-arms for what is left."""
        self._deadline = self.loop.time() + seconds
        if self._timer is None or self._timer.when() > self._deadline:
            self._cancel_timer()
            self._timer = self.loop.call_at(self._deadline, self._expired)

    def _disarm(self) -> None:
        self._deadline = None

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self) -> None:
        """The timer fired: act if the deadline of the phase the connection is in has passed."""
        self._timer = None
        if self._deadline is None:
            return
        if self.loop.time() < self._deadline:
            self._timer = self.loop.call_at(self._deadline, self._expired)
            return
        self._deadline = None
        if self._phase in (IDLE, CLOSED):
            self._close()
        elif self._phase == HEADERS:
            self._refuse(InvalidRequest(f"the request's headers did not arrive within "
                                        f"{self.limits.header_timeout_s:g} s", status=408, code="request_timeout"))
        elif self._phase == BODY:
            self._refuse(InvalidRequest(f"the request's body did not arrive within {self.limits.body_timeout_s:g} s",
                                        status=408, code="request_timeout"))

    def _refuse(self, error: GatewayError) -> None:
        """Answer error ourselves, if no response is under way on this connection, then close it."""
        cycle = self.cycle
        answer = (self._phase == HEADERS and (cycle is None or cycle.response_complete)) or (
            self._phase == BODY and cycle is not None and not cycle.response_started)
        logger.debug("connection refused: %d %s", error.status, error.message)
        if not answer:
            self._close()
            return
        if self._phase == BODY:
            cycle.disconnected = True  # the app, waiting for the body, sees the client gone and sends nothing
            cycle.message_event.set()
        identity = getattr(self.app, "identity_headers", None)  # the Gateway's request id and policy hash
        self.transport.write(_response(error, identity() if identity is not None else []))
        self._linger()

    def _linger(self) -> None:
        """Stop writing but read (and drop) what the client still sends for a moment, then close.

        Closing a socket with unread bytes makes the kernel send a reset, and a client that gets one before it has
        read the answer never sees the answer.
        """
        self._phase = CLOSED
        self.guard.closed(self)
        if not self.transport.can_write_eof():
            self._close()
            return
        self.transport.write_eof()
        self.flow.resume_reading()
        self._arm(LINGER_S)

    def _close(self) -> None:
        self._phase = CLOSED
        self._cancel_timer()
        self.guard.closed(self)
        if not self.transport.is_closing():
            self.transport.close()


def _response(error: GatewayError, headers: list[tuple[bytes, bytes]]) -> bytes:
    """A whole HTTP response carrying error and headers, closing the connection."""
    body = error_body(error)
    extra = "".join(f"{name.decode()}: {value.decode()}\r\n" for name, value in headers)
    head = (f"HTTP/1.1 {error.status} {http.HTTPStatus(error.status).phrase}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n{extra}connection: close\r\n\r\n")
    return head.encode() + body
