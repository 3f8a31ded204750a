"""The fault server's script: what an upstream does with one request, and how each arrival is recorded."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Reset:
    """Close with SO_LINGER 0 before any response byte: the client sees a TCP reset."""


@dataclass(frozen=True)
class SilentClose:
    """Say nothing for after_s seconds, then close the connection (FIN) without answering."""

    after_s: float = 0.0


@dataclass(frozen=True)
class Hang:
    """Never answer; keep the socket open until the client leaves or the server stops."""


@dataclass(frozen=True)
class Status:
    """An error status with a JSON body (OpenAI's error shape unless body is given) and an optional Retry-After."""

    status: int
    message: str = "upstream error"
    retry_after: str | None = None
    body: dict[str, Any] | None = None
    delay_s: float = 0.0


@dataclass(frozen=True)
class Json:
    """A normal chat completion; model is the one the request named, content says who answered."""

    content: str | None = None
    prompt_tokens: int = 7
    completion_tokens: int = 3
    delay_s: float = 0.0
    headers: tuple[tuple[str, str], ...] = ()  # more response headers (a Set-Cookie, say)


@dataclass(frozen=True)
class Sse:
    """A stream of raw events (chunked), each after its delay; cut (FIN, or RST with reset) or stall after K events.

    [DONE] follows the events unless done is False. stall_after keeps the connection open, sending nothing
    (for stall_s seconds and then closing it, when stall_s is given).
    together sends every event (up to a cut or stall) in one write, so the client reads them at once.
    """

    events: tuple[bytes, ...]
    delays: tuple[float, ...] = ()
    cut_after: int | None = None
    reset: bool = False
    stall_after: int | None = None
    done: bool = True
    together: bool = False
    stall_s: float | None = None


@dataclass(frozen=True)
class Redirect:
    """A 3xx pointing elsewhere (another loopback port, say): an upstream trying to send the request on."""

    status: int
    location: str


@dataclass(frozen=True)
class Flood:
    """A hostile answer of size bytes, streamed 64 KiB at a time and never held whole: head, then fill repeated.

    encoding is sent as Content-Encoding with the bytes as given (head can be a pre-made gzip bomb). With
    hold_at, sending stops after that many bytes until go is set, so a test can probe the gateway meanwhile.
    """

    size: int
    status: int = 200
    content_type: str = "application/json"
    head: bytes = b""
    fill: bytes = b"a"
    encoding: str | None = None
    chunked: bool = True
    hold_at: int | None = None
    go: threading.Event | None = None


@dataclass(frozen=True)
class Echo:
    """An answer rendered from the provider key the request carried, as a hostile upstream echoing it would."""

    render: Callable[[str], bytes]
    status: int = 200
    content_type: str = "application/json"


Behaviour = Reset | SilentClose | Hang | Status | Json | Sse | Redirect | Flood | Echo


@dataclass
class Arrival:
    """One request as the fault server received it."""

    at: float
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    closed_at: float | None = None  # when the client closed its side (EOF or reset seen)
    sent: int = 0  # body bytes a Flood got out before the client left
    held: threading.Event = field(default_factory=threading.Event)  # a Flood reached hold_at
    gone: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def closed(self) -> bool:
        return self.closed_at is not None
