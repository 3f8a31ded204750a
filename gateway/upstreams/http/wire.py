"""What goes on the wire to an upstream: where (an origin, read from a URL once) and a POST's head, checked.

A header is written only if it cannot change how the upstream reads the request: a name that is an HTTP token and
not one this client writes itself (FRAMING), a latin-1 value without a line break or NUL.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

UNSAFE = frozenset("\r\n\0")
FRAMING = frozenset({"host", "content-length", "transfer-encoding", "connection", "keep-alive", "te", "trailer",
                     "upgrade", "expect", "proxy-connection"})  # written by this client alone
TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # a header name, as RFC 9110 spells it


@dataclass(frozen=True, slots=True)
class Origin:
    """Where connections go: scheme, host and port, and the Host header and path prefix a URL gives."""

    tls: bool
    host: str
    port: int
    authority: str
    prefix: str

    @classmethod
    def of(cls, url: str) -> Origin:
        """The origin of an http or https URL; ValueError for anything else."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        tls = parts.scheme == "https"
        port = parts.port or (443 if tls else 80)
        host = parts.hostname
        shown = f"[{host}]" if ":" in host else host
        authority = shown if port == (443 if tls else 80) else f"{shown}:{port}"
        return cls(tls, host, port, authority, parts.path.rstrip("/"))


def header_lines(headers: Mapping[str, str]) -> bytes:
    """Headers as they go on the wire; ValueError for a name or value that would break the request's framing."""
    lines = []
    for name, value in headers.items():
        if not TOKEN.fullmatch(name) or name.lower() in FRAMING or UNSAFE.intersection(value):
            raise ValueError(f"header {name[:64]!r} is not fit to send")
        lines.append(f"{name}: {value}\r\n")
    try:
        return "".join(lines).encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError("a header is not latin-1") from None


def head_bytes(origin: Origin, path: str, fixed: bytes, headers: Mapping[str, str], length: int) -> bytes:
    """A POST's request line and headers: fixed (from header_lines, once) and headers, checked here."""
    extra = header_lines(headers) if headers else b""
    line = f"POST {origin.prefix}{path} HTTP/1.1\r\nhost: {origin.authority}\r\n".encode("latin-1")
    return b"%s%s%scontent-length: %d\r\n\r\n" % (line, fixed, extra, length)
