"""Structured JSON logs with the request id in every line and secrets redacted at the sink."""

from __future__ import annotations

import contextvars
import logging
import re
import sys
import time
from collections.abc import Iterable
from typing import Any

import orjson

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
quiet: contextvars.ContextVar[bool] = contextvars.ContextVar("quiet", default=False)  # below warning, say nothing
ACCESS_LOGGER = "uvicorn.access"
FOREIGN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "LiteLLM", "LiteLLM Router", "LiteLLM Proxy")
SECRET = re.compile(r"(?i)(bearer\s+)\S+|\b(sk-[A-Za-z0-9_\-]{6,}|AIza[0-9A-Za-z_\-]{20,})")


class Redactor:
    """Cuts known secrets (provider keys from the policy) and anything shaped like a key out of text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets = sorted((s for s in secrets if len(s) >= 6), key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "[redacted]")
        return SECRET.sub(lambda m: (m.group(1) or "") + "[redacted]", text)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, request id, message; redacted last."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(), "logger": record.name, "message": record.getMessage(),
            "pid": record.process,
        }
        rid = request_id.get()
        if rid:
            entry["request_id"] = rid
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info).splitlines()[-1]
        return self.redactor(orjson.dumps(entry).decode())


def configure(level: str, secrets: Iterable[str] = (), access_log: bool = False) -> None:
    """Send every log line, uvicorn's and litellm's and Python's warnings included, through the JSON formatter on
    stderr; uvicorn's access lines only when access_log."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(Redactor(secrets)))
    handler.addFilter(_heard)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.captureWarnings(True)  # a library's warnings.warn() becomes a JSON line of logger py.warnings
    logging.getLogger(ACCESS_LOGGER).disabled = not access_log
    adopt_foreign_loggers()


def _heard(record: logging.LogRecord) -> bool:
    """Whether a record is logged: not an info line of a task that asked for quiet (the demo's stand-ins)."""
    return record.levelno >= logging.WARNING or not quiet.get()


def adopt_foreign_loggers() -> None:
    """Take the handlers off uvicorn's and litellm's loggers so their lines reach ours, formatted and redacted.

    litellm adds a plain-text handler of its own when it is imported, which may be after `configure`: the app calls
    this again once every upstream client (and so litellm) is built."""
    for name in FOREIGN_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        # uvicorn formats an access line whenever its logger has a handler on its path, even a disabled one.
        logger.propagate = not (name == ACCESS_LOGGER and logger.disabled)
