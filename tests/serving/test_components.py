"""The parts of one process: made from its settings, a bad policy refused at once, each inbound by its paths."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from gateway.errors import GatewayError, PolicyError
from gateway.inbound.messages.adapter import MessagesInbound
from gateway.inbound.openai import OpenAIInbound
from gateway.pipeline.runtime import Runtime
from gateway.serving.components import Components, audit_log, by_path
from gateway.serving.settings import Settings
from gateway.state.memory import MemoryBackend
from gateway.state.redis import RedisBackend
from tests.conftest import upstream_spec, write_policy


def policy_file(folder: Path) -> Path:
    return write_policy(folder, {"a": upstream_spec("http://127.0.0.1:1")}, {"chat": {"candidates": ["a"]}})


def test_each_inbound_serves_its_own_paths() -> None:
    openai = OpenAIInbound()
    routed = by_path(openai)
    assert set(routed) == {"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses"}
    assert all(inbound is openai for inbound in routed.values())


def test_the_openai_and_messages_inbounds_serve_every_path_between_them(tmp_path: Path) -> None:
    parts = Components(Settings(policy=str(policy_file(tmp_path))))
    assert isinstance(parts.inbounds["/v1/chat/completions"], OpenAIInbound)
    assert isinstance(parts.inbounds["/v1/messages"], MessagesInbound)
    assert set(parts.inbounds) == set(parts.openai.endpoints) | set(parts.messages.endpoints)


def test_the_policy_is_loaded_at_once_and_state_is_in_memory_without_redis(tmp_path: Path) -> None:
    path = policy_file(tmp_path)
    parts = Components(Settings(policy=str(path)))
    assert parts.policy.doc.models["chat"].candidates == ("a",)
    assert parts.policy_path == str(path)
    assert isinstance(parts.ledger.backend, MemoryBackend)
    assert parts.circuits is parts.dispatcher.circuits
    assert (parts.runtime, parts.reloader) == (None, None)


def test_redis_calls_get_the_timeout_the_settings_give(tmp_path: Path) -> None:
    parts = Components(Settings(policy=str(policy_file(tmp_path)), redis_url="redis://127.0.0.1:1/0",
                                redis_timeout_s=0.25))
    assert isinstance(parts.ledger.backend, RedisBackend)
    assert parts.ledger.backend.timeout_s == 0.25


def test_a_broken_policy_stops_the_parts_from_being_made(tmp_path: Path) -> None:
    path = write_policy(tmp_path, {"a": upstream_spec("http://127.0.0.1:1")}, {"chat": {"candidates": ["b"]}})
    with pytest.raises(PolicyError, match="upstream 'b' is not defined"):
        Components(Settings(policy=str(path)))


def test_before_the_lifespan_made_a_runtime_the_gateway_is_not_ready(tmp_path: Path) -> None:
    parts = Components(Settings(policy=str(policy_file(tmp_path))))
    with pytest.raises(GatewayError) as caught:
        parts.ready()
    assert (caught.value.status, caught.value.code) == (503, "not_ready")
    parts.runtime = Runtime(parts.policy, {})
    assert parts.ready() is parts.runtime


def test_an_audit_trail_without_a_key_is_warned_of(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    metrics = Components(Settings(policy=str(policy_file(tmp_path)))).metrics
    trail = (str(tmp_path / "trail.jsonl"),)
    key = tmp_path / "audit.key"
    key.write_text("k" * 32)
    with caplog.at_level(logging.WARNING, logger="switchyard.app"):
        audit_log(Settings(audit=trail, audit_key_file=str(key)), metrics).close()
        audit_log(Settings(), metrics).close()  # no trail: nothing to key
        assert caplog.records == []
        audit_log(Settings(audit=trail), metrics).close()
    [warning] = caplog.records
    assert "the audit trail is not keyed" in warning.getMessage()
