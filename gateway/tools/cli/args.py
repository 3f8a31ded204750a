"""Argument types and validators, and the option groups several commands share."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeAlias

Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def port_pair(value: str) -> tuple[int, int]:
    """Two TCP ports written 'A,B'."""
    try:
        first, second = (int(part) for part in value.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{value}' is not two ports written A,B") from None
    if not all(0 <= port < 65536 for port in (first, second)):
        raise argparse.ArgumentTypeError(f"'{value}': a port is between 0 and 65535")
    return first, second


def redis_url(value: str) -> str:
    """A Redis URL the gateway can use, else a usage error saying why (never echoing a password)."""
    from gateway.state.resp import Address

    try:
        Address.parse(value).tls_context()
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    except OSError as exc:  # ssl.SSLError is one too
        raise argparse.ArgumentTypeError(f"cannot use the TLS files it names: {exc.strerror or exc}") from None
    return value


SOCKET_OPTIONS = (  # flag, SocketLimits field, type, help
    ("--header-timeout-s", "header_timeout_s", float, "a request's headers must be in this long after its first byte"),
    ("--body-timeout-s", "body_timeout_s", float, "a request's body must be in this long after its headers"),
    ("--keepalive-s", "keepalive_s", float, "close a connection with no request begun after this long"),
    ("--max-connections", "max_connections", int, "open client connections per process (0: half the open-file "
                                                  "limit)"),
    ("--max-header-bytes", "max_header_bytes", int, "the request line and headers, in bytes (431 past it)"),
    ("--max-headers", "max_headers", int, "headers per request (431 past it)"),
)


def socket_options(command: argparse.ArgumentParser) -> None:
    """The client-connection limits, each defaulting to $SWITCHYARD_<NAME> and else to SocketLimits'."""
    from gateway.serving.connections import SocketLimits

    defaults = SocketLimits()
    for flag, name, kind, text in SOCKET_OPTIONS:
        variable = f"SWITCHYARD_{name.upper()}"
        default = os.environ.get(variable, str(getattr(defaults, name)))  # argparse parses a str default too
        command.add_argument(flag, dest=name, type=positive(kind), default=default, metavar="N",
                             help=f"{text} (default: ${variable}, else %(default)s)")


def positive(kind: type[float] | type[int]) -> Callable[[str], float]:
    """A parser of numbers of this kind that refuses negatives (and, for floats, zero)."""
    def parse(value: str) -> float:
        try:
            number = kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
        if number < 0 or (number == 0 and kind is float):
            raise argparse.ArgumentTypeError(f"{value!r} is not a positive number")
        return number
    return parse


def key_file(path: str) -> str:
    """A readable audit key file, long enough to trust."""
    from gateway.operations.audit import read_key

    try:
        read_key(path)
    except (OSError, ValueError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return path


def redis_file(path: str) -> str:
    """The Redis URL on the first line of the file at path, checked as --redis checks one."""
    try:
        url = Path(path).read_text(encoding="utf-8").strip().splitlines()[0:1]
    except (OSError, UnicodeDecodeError) as exc:
        raise argparse.ArgumentTypeError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if not url:
        raise argparse.ArgumentTypeError(f"{path} is empty: it should hold a Redis URL")
    try:
        return redis_url(url[0].strip())
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(f"{path}: {exc}") from None


def env_int(name: str) -> int | None:
    """The integer in the environment variable name, or None when it is unset or empty."""
    value = os.environ.get(name)
    return int(value) if value else None


def listen_options(command: argparse.ArgumentParser) -> None:
    """Where a command that serves listens, and how much it logs."""
    command.add_argument("--host", default="127.0.0.1")
    command.add_argument("--port", type=int, default=8080)
    command.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
