"""What `switchyard serve` configures, as each worker process reads it from SWITCHYARD_* variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_MAX_BODY = 10 * 1024 * 1024
DEFAULT_REDIS_TIMEOUT_MS = 100


@dataclass(frozen=True)
class Settings:
    """What `switchyard serve` configures."""

    policy: str = "policies"
    max_body_bytes: int = DEFAULT_MAX_BODY
    reload_interval_s: float = 2.0
    redis_url: str | None = None
    admin_key: str | None = None
    audit: tuple[str, ...] = ()
    audit_key_file: str | None = None
    metrics_port: int | None = None  # /metrics is served there, and then not on the main port
    redis_timeout_s: float = DEFAULT_REDIS_TIMEOUT_MS / 1000  # one Redis call; an admission waits twice this

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Settings:
        """Settings from SWITCHYARD_* variables, as each worker process reads them."""
        return cls(policy=env.get("SWITCHYARD_POLICY", "policies"),
                   max_body_bytes=int(env.get("SWITCHYARD_MAX_BODY_BYTES", DEFAULT_MAX_BODY)),
                   reload_interval_s=float(env.get("SWITCHYARD_RELOAD_INTERVAL_S", 2.0)),
                   redis_url=env.get("SWITCHYARD_REDIS_URL") or None,
                   redis_timeout_s=float(env.get("SWITCHYARD_REDIS_TIMEOUT_MS") or DEFAULT_REDIS_TIMEOUT_MS) / 1000,
                   admin_key=env.get("SWITCHYARD_ADMIN_KEY") or None,
                   audit=tuple(t for t in env.get("SWITCHYARD_AUDIT", "").split(",") if t),
                   audit_key_file=env.get("SWITCHYARD_AUDIT_KEY_FILE") or None,
                   metrics_port=int(env["SWITCHYARD_METRICS_PORT"]) if env.get("SWITCHYARD_METRICS_PORT") else None)
