"""gateway.serving.settings: what the SWITCHYARD_* variables configure."""

from __future__ import annotations

from gateway.serving.settings import DEFAULT_MAX_BODY, Settings


def test_settings_default_without_any_variable() -> None:
    assert Settings.from_env({}) == Settings()
    assert Settings().max_body_bytes == DEFAULT_MAX_BODY


def test_settings_read_every_variable() -> None:
    env = {"SWITCHYARD_POLICY": "p.yaml", "SWITCHYARD_MAX_BODY_BYTES": "2048", "SWITCHYARD_RELOAD_INTERVAL_S": "0.5",
           "SWITCHYARD_REDIS_URL": "redis://r:6379", "SWITCHYARD_ADMIN_KEY": "adm",
           "SWITCHYARD_AUDIT": "a.jsonl,stdout", "SWITCHYARD_AUDIT_KEY_FILE": "k", "SWITCHYARD_METRICS_PORT": "9100",
           "SWITCHYARD_REDIS_TIMEOUT_MS": "250.5"}
    assert Settings.from_env(env) == Settings("p.yaml", 2048, 0.5, "redis://r:6379", "adm", ("a.jsonl", "stdout"), "k",
                                              9100, 250.5 / 1000)


def test_empty_variables_mean_unset() -> None:
    env = {"SWITCHYARD_REDIS_URL": "", "SWITCHYARD_ADMIN_KEY": "", "SWITCHYARD_AUDIT": "",
           "SWITCHYARD_METRICS_PORT": "", "SWITCHYARD_REDIS_TIMEOUT_MS": ""}
    assert Settings.from_env(env) == Settings()
