"""Policies for the stages' unit tests: two upstreams that are never called, and one route over them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gateway.pipeline.runtime import Runtime
from gateway.routing.policy.loader import load_policy
from gateway.routing.policy.model import Policy
from tests.conftest import KEY, key_hash, upstream_spec, write_policy

NOWHERE = "http://127.0.0.1:9"  # the discard port: the stages under test never send upstream


def policy(folder: Path, primary: str = NOWHERE, fallback: str = NOWHERE, **acme: Any) -> Policy:
    """A route chat over primary then fallback (the cheaper), and a tenant acme (KEY) with the given settings."""
    specs = {"primary": upstream_spec(primary, model="primary-model"),
             "fallback": upstream_spec(fallback, model="fallback-model", cost={"input_per_mtok": 0.1,
                                                                                "output_per_mtok": 0.2})}
    tenants = {"acme": {"keys": [key_hash(KEY)], **acme}}
    return load_policy(write_policy(folder, specs, {"chat": {"candidates": ["primary", "fallback"]}}, tenants=tenants))


def runtime(folder: Path, **acme: Any) -> Runtime:
    """A runtime without clients (for the stages that send nothing upstream) of policy(folder, **acme)."""
    return Runtime(policy(folder, **acme), {})
