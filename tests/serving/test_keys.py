"""The keys the gateway knows of itself: a loud warning for the public development key, provider keys to redact."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from gateway.routing.policy.loader import load_policy
from gateway.routing.policy.model import hash_key
from gateway.serving.keys import PUBLIC_KEYS, provider_keys, warn_of_public_keys
from tests.conftest import upstream_spec, write_policy

CHAT = {"chat": {"candidates": ["primary"]}}


def test_a_policy_accepting_the_public_key_is_warned_of_by_tenant_without_the_key(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write_policy(tmp_path, {"primary": upstream_spec("http://127.0.0.1:1")}, CHAT,
                        tenants={"dev": {"keys": [hash_key(PUBLIC_KEYS[0])]}})
    with caplog.at_level(logging.WARNING, logger="switchyard.app"):
        warn_of_public_keys(load_policy(path))
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert "PUBLIC DEVELOPMENT KEY" in record.getMessage()
    assert "tenant 'dev'" in record.getMessage()
    assert PUBLIC_KEYS[0] not in record.getMessage()


def test_a_policy_without_the_public_key_is_not_warned_of(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write_policy(tmp_path, {"primary": upstream_spec("http://127.0.0.1:1")}, CHAT)
    with caplog.at_level(logging.DEBUG, logger="switchyard.app"):
        warn_of_public_keys(load_policy(path))
    assert caplog.records == []


def test_provider_keys_are_every_upstream_key_the_policy_holds(tmp_path: Path) -> None:
    upstreams = {"primary": upstream_spec("http://127.0.0.1:1", api_key="sk-provider-one"),
                 "keyless": upstream_spec("http://127.0.0.1:2"),
                 "blank": upstream_spec("http://127.0.0.1:3", api_key=""),
                 "second": upstream_spec("http://127.0.0.1:4", api_key="sk-provider-two")}
    path = write_policy(tmp_path, upstreams, {"chat": {"candidates": list(upstreams)}})
    assert provider_keys(load_policy(path)) == ["sk-provider-one", "sk-provider-two"]
