"""Metric updates on the request path are tallied and applied to prometheus_client at the next flush."""

from __future__ import annotations

import importlib.metadata
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
import yaml

from gateway.operations.metrics import MULTIPROC_ENV, Metrics, prepare_multiprocess
from tests.conftest import KEY, Loop, Stack, key_hash, start_stack, wait_for

HELLO = [{"role": "user", "content": "hello"}]
AUTH = {"authorization": f"Bearer {KEY}"}


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_counts_are_applied_at_the_next_flush() -> None:
    metrics = Metrics()
    metrics.count(metrics.requests, "acme", "chat", "chat", "a", "200")
    metrics.count(metrics.requests, "acme", "chat", "chat", "a", "200", amount=2)
    labels = {"tenant": "acme", "endpoint": "chat", "route": "chat", "upstream": "a", "status": "200"}
    assert metrics._registry.get_sample_value("switchyard_requests_total", labels) is None
    assert sample(metrics, "switchyard_requests_total", tenant="acme", endpoint="chat", route="chat", upstream="a",
                  status="200") == 3


def test_an_unlabelled_counter_is_counted_like_a_labelled_one() -> None:
    """Its own child: prometheus_client's labels() refuses an unlabelled collector, which broke every flush."""
    metrics = Metrics()
    metrics.count(metrics.audit_unauthenticated)
    metrics.count(metrics.audit_unauthenticated, amount=2)
    assert sample(metrics, "switchyard_audit_unauthenticated_total") == 3
    metrics.count(metrics.requests, "acme", "chat", "chat", "a", "200")
    assert sample(metrics, "switchyard_requests_total", tenant="acme", endpoint="chat", route="chat", upstream="a",
                  status="200") == 1


def test_a_gauge_moved_up_and_down_between_flushes_shows_its_net_value() -> None:
    metrics = Metrics()
    metrics.count(metrics.inflight, "a")
    metrics.count(metrics.inflight, "a", amount=-1)
    assert sample(metrics, "switchyard_inflight_requests", upstream="a") == 0  # shown, though it nets zero
    metrics.count(metrics.inflight, "a")
    metrics.count(metrics.inflight, "a")
    metrics.flush()
    metrics.count(metrics.inflight, "a", amount=-1)
    assert sample(metrics, "switchyard_inflight_requests", upstream="a") == 1


def test_the_last_value_set_between_flushes_wins() -> None:
    metrics = Metrics()
    metrics.set(metrics.budget_remaining, 5.0, "acme", "day")
    metrics.set(metrics.budget_remaining, 4.5, "acme", "day")
    assert sample(metrics, "switchyard_budget_remaining_usd", tenant="acme", window="day") == 4.5


def test_observations_land_in_their_buckets() -> None:
    metrics = Metrics()
    for seconds in (0.004, 0.004, 2.0):
        metrics.observe(metrics.duration, seconds, "chat", "a")
    labels = {"route": "chat", "upstream": "a"}
    assert sample(metrics, "switchyard_request_duration_seconds_count", **labels) == 3
    assert sample(metrics, "switchyard_request_duration_seconds_sum", **labels) == 2.008
    assert sample(metrics, "switchyard_request_duration_seconds_bucket", **labels, le="+Inf") == 3


@pytest.fixture
def multiproc_env() -> Iterator[None]:
    """prepare_multiprocess sets PROMETHEUS_MULTIPROC_DIR for this process: take it away after the test."""
    assert MULTIPROC_ENV not in os.environ
    yield
    os.environ.pop(MULTIPROC_ENV, None)


@pytest.mark.usefixtures("multiproc_env")
def test_a_metrics_folder_holding_other_files_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    (tmp_path / "report.pdf").write_text("not ours")
    (tmp_path / "counter_1.db").write_text("looks like ours, but the folder was never marked")
    with pytest.raises(ValueError, match=r"holds files the gateway did not write \(counter_1.db, report.pdf\)"):
        prepare_multiprocess(str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["counter_1.db", "report.pdf"]


@pytest.mark.usefixtures("multiproc_env")
def test_a_metrics_folder_is_emptied_of_an_earlier_run_s_files_only(tmp_path: Path) -> None:
    folder = tmp_path / "metrics"
    prepare_multiprocess(str(folder))  # made and marked
    (folder / "counter_123.db").write_bytes(b"\0" * 8)
    (folder / "gauge_livesum_123.db").write_bytes(b"\0" * 8)
    prepare_multiprocess(str(folder))
    assert [p.name for p in folder.iterdir()] == [".switchyard-metrics"]
    (folder / "notes.txt").write_text("someone else's")
    with pytest.raises(ValueError, match=r"notes\.txt"):
        prepare_multiprocess(str(folder))
    assert (folder / "notes.txt").exists()


# --- what the gateway exports, over loopback --------------------------------------------------------------------


def scrape(stack: Stack) -> dict[str, list[dict[str, str]]]:
    """Every sample's labels on /metrics, by metric name."""
    found: dict[str, list[dict[str, str]]] = {}
    for line in httpx.get(stack.served.url + "/metrics").text.splitlines():
        if line and not line.startswith("#"):
            key = line.rpartition(" ")[0]
            name, _, labels = key.partition("{")
            found.setdefault(name, []).append(dict(re.findall(r'(\w+)="([^"]*)"', labels)))
    return found


def value(stack: Stack, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include labels."""
    total = 0.0
    for line in httpx.get(stack.served.url + "/metrics").text.splitlines():
        key, _, number = line.rpartition(" ")
        metric, _, text = key.partition("{")
        if metric == name and labels.items() <= dict(re.findall(r'(\w+)="([^"]*)"', text)).items():
            total += float(number)
    return total


def test_labels_come_from_the_policy_never_from_the_client(stack: Stack) -> None:
    url = stack.served.url
    for n in range(30):
        junk = f"junk-{n}-{secrets.token_hex(4)}"
        body = {"model": junk, "messages": HELLO, "user": junk, "metadata": {"tenant": junk}}
        httpx.post(url + "/v1/chat/completions", json=body, headers={**AUTH, "x-request-id": junk, "x-tenant": junk})
        httpx.post(url + "/v1/chat/completions", json={**body, "model": "chat"},
                   headers={"authorization": f"Bearer sk-{junk}", "x-switchyard-route": junk})
        httpx.post(url + f"/v1/{junk}", json=body, headers=AUTH)
        httpx.post(url + "/v1/embeddings", json={"model": junk, "input": junk}, headers=AUTH)
    stack.client().chat.completions.create(model="chat", messages=HELLO)  # type: ignore[arg-type]
    policy = stack.gateway.policy.doc
    bounded = {"tenant": {*policy.tenants, "-"}, "route": {*policy.models, "unknown"},
               "upstream": {*policy.upstreams, "none"}, "endpoint": {"chat", "completions", "embeddings", "responses"}}
    samples = scrape(stack)
    assert {s["tenant"] for s in samples["switchyard_requests_total"]} == {"acme", "-"}
    assert {s["route"] for s in samples["switchyard_requests_total"]} == {"chat", "unknown"}
    for name, labelled in samples.items():
        for labels in labelled:
            for label, allowed in bounded.items():
                assert labels.get(label, "none") in allowed | {"none"}, (name, labels)
            assert "junk" not in str(labels), name


def test_a_refused_request_counts_its_exclusions_like_a_served_one(loop: Loop, tmp_path: Path) -> None:
    stack = start_stack(loop, tmp_path, upstream_fallback={"region": "us-east"}, tenants={"acme": {
        "keys": [key_hash(KEY)], "regions": ["eu-west"], "rate_limit": {"requests_per_minute": 1}}})
    client = stack.client()
    client.chat.completions.create(model="chat", messages=HELLO)  # type: ignore[arg-type]
    excluded = {"route": "chat", "upstream": "fallback", "reason": "tenant_region"}
    assert value(stack, "switchyard_candidates_excluded_total", **excluded) == 1
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="chat", messages=HELLO)  # type: ignore[arg-type]
    assert value(stack, "switchyard_candidates_excluded_total", **excluded) == 2
    assert value(stack, "switchyard_requests_total", tenant="acme", endpoint="chat", route="chat", status="429") == 1


def test_a_request_no_upstream_may_serve_counts_every_exclusion(loop: Loop, tmp_path: Path) -> None:
    stack = start_stack(loop, tmp_path, names=("primary", "fallback", "spare"), upstream_spare={"region": "ap-south"},
                        models={"chat": {"candidates": ["primary", "fallback"]}, "spare": {"candidates": ["spare"]}},
                        tenants={"acme": {"keys": [key_hash(KEY)], "regions": ["ap-south"]}})
    with pytest.raises(openai.PermissionDeniedError):
        stack.client().chat.completions.create(model="chat", messages=HELLO)  # type: ignore[arg-type]
    for upstream in ("primary", "fallback"):
        assert value(stack, "switchyard_candidates_excluded_total", route="chat", upstream=upstream,
                     reason="tenant_region") == 1


def test_every_upstream_has_a_circuit_sample_from_the_start_and_after_a_reload(loop: Loop, tmp_path: Path) -> None:
    stack = start_stack(loop, tmp_path)
    circuits = {s["upstream"] for s in scrape(stack)["switchyard_circuit_state"]}
    assert circuits == {"primary", "fallback"}
    assert value(stack, "switchyard_circuit_state", upstream="primary") == 0
    path = tmp_path / "policy.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["upstreams"]["third"] = doc["upstreams"].pop("fallback")
    doc["models"]["chat"]["candidates"] = ["primary", "third"]
    path.write_text(yaml.safe_dump(doc))
    reloader = stack.gateway.reloader
    assert reloader is not None
    loop.loop.call_soon_threadsafe(reloader.request)
    wait_for(lambda: {s["upstream"] for s in scrape(stack)["switchyard_circuit_state"]} == {"primary", "third"},
             what="the reloaded policy's upstreams in switchyard_circuit_state")


def test_build_info_and_process_metrics_are_exported(stack: Stack) -> None:
    samples = scrape(stack)
    assert samples["switchyard_build_info"] == [{"version": importlib.metadata.version("switchyard")}]
    assert value(stack, "switchyard_build_info") == 1
    assert value(stack, "process_cpu_seconds_total") > 0
    assert "python_info" in samples


def test_a_gauge_read_at_flush_shows_what_its_owner_holds_then() -> None:
    metrics, held = Metrics(), {"a": 2}
    metrics.read_at_flush(metrics.inflight, lambda: held)
    assert sample(metrics, "switchyard_inflight_requests", upstream="a") == 2
    held["a"], held["b"] = 0, 1
    assert sample(metrics, "switchyard_inflight_requests", upstream="a") == 0
    assert sample(metrics, "switchyard_inflight_requests", upstream="b") == 1
