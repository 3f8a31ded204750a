"""What an upstream client is built from: its defaults, its key kept secret until asked for, and no edits after."""

from __future__ import annotations

import dataclasses

import pytest
from pydantic import SecretStr

from gateway.upstreams.spec import MIB, Limits, Timeouts, UpstreamSpec


def test_the_defaults_are_the_policys_defaults() -> None:
    assert Limits() == Limits(body_bytes=64 * MIB, decompressed_bytes=64 * MIB, error_body_bytes=64 << 10,
                              sse_event_bytes=4 * MIB)
    assert Timeouts() == Timeouts(connect_s=5, per_try_s=30, stream_idle_s=15)
    spec = UpstreamSpec(model="m")
    assert (spec.kind, spec.base_url, spec.key, spec.capabilities, spec.forward_headers) == (
        "openai", None, None, frozenset(), frozenset())
    assert spec.limits == Limits()


def test_the_key_is_given_in_clear_only_when_asked_for() -> None:
    spec = UpstreamSpec(model="m", api_key=SecretStr("sk-provider-secret"))
    assert spec.key == "sk-provider-secret"
    assert "sk-provider-secret" not in repr(spec)
    assert "sk-provider-secret" not in str(spec)


def test_a_spec_cannot_be_changed_once_made() -> None:
    spec = UpstreamSpec(model="m", limits=Limits(body_bytes=10))
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.model = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.limits.body_bytes = 20  # type: ignore[misc]
    assert dataclasses.replace(spec, model="other").limits.body_bytes == 10
