"""gateway/accounting/usage.py: what a request reserves, the cap it is sent with, and usage held to what it could be."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.accounting import usage as accounting
from gateway.accounting.usage import Usage
from gateway.operations.metrics import Metrics
from gateway.routing.policy.decide import Features
from gateway.routing.policy.loader import load_policy
from gateway.routing.policy.model import Policy
from gateway.state.base import MOST, NANO, to_nano
from tests.conftest import KEY, OTHER_KEY, key_hash, write_policy

IN, OUT = 1.0 / 1e6, 2.0 / 1e6  # USD per token at the prices below


def policy(tmp_path: Path, budget: dict[str, Any] | None = None, window: int | None = 4096,
           default_max_tokens: int = 100, **cache_prices: float) -> Policy:
    """One upstream (window tokens, $1 in and $2 out per Mtok, and the cache prices given), route 'chat', tenant
    acme with budget."""
    upstream: dict[str, Any] = {"base_url": "http://127.0.0.1:9/v1", "model": "m",
                                "cost": {"input_per_mtok": 1.0, "output_per_mtok": 2.0, **cache_prices}}
    if window is not None:
        upstream["context_window"] = window
    acme: dict[str, Any] = {"keys": [key_hash(KEY)]}
    if budget is not None:
        acme["budget"] = budget
    path = write_policy(tmp_path, {"up": upstream}, {"chat": {"candidates": ["up"],
                                                              "default_max_tokens": default_max_tokens}},
                        tenants={"acme": acme, "other": {"keys": [key_hash(OTHER_KEY)]}})
    return load_policy(path)


def features(endpoint: str = "chat", max_tokens: int | None = None, n: int = 1, prompt: int = 10) -> Features:
    return Features(route="chat", tenant="acme", prompt_tokens=prompt, endpoint=endpoint, max_tokens=max_tokens, n=n)


# --- the reservation --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("endpoint", "max_tokens", "n", "completion"), [
    ("chat", 1000, 1, 1000),
    ("chat", 1000, 100, 100_000),  # every choice may run to max_tokens
    ("chat", None, 3, 300),  # the route's default, n times
    ("completions", 50, 4, 200),
    ("responses", None, 1, 100),
    ("embeddings", None, 1, 0),  # embeddings generate nothing
])
def test_the_reservation_is_the_prompt_plus_n_times_the_cap(tmp_path: Path, endpoint: str, max_tokens: int | None,
                                                            n: int, completion: int) -> None:
    loaded = policy(tmp_path, {"usd_per_day": 1.0}, window=None)
    limits = accounting.limits_for(loaded, features(endpoint, max_tokens, n), ("up",))
    assert limits.cost == round((10 * IN + completion * OUT) * NANO)
    assert limits.budgets == (("day", NANO),)


@pytest.mark.parametrize(("cache_prices", "per_prompt_token"), [
    ({"cache_write_per_mtok": 1.25}, 1.25 / 1e6),  # Anthropic's premium: a prompt of cache writes costs more
    ({"cache_read_per_mtok": 0.1}, IN),  # a discount never lowers what is reserved
    ({}, IN),
])
def test_the_reservation_prices_the_prompt_at_its_dearest_prompt_price(tmp_path: Path, cache_prices: dict[str, float],
                                                                       per_prompt_token: float) -> None:
    loaded = policy(tmp_path, {"usd_per_day": 1.0}, **cache_prices)
    limits = accounting.limits_for(loaded, features(max_tokens=50, prompt=1000), ("up",))
    assert limits.cost == round((1000 * per_prompt_token + 50 * OUT) * NANO)
    all_writes = accounting.settle(Metrics(), loaded, "acme", "up", Usage(1000, 50, 0, 1000))[1]
    assert to_nano(all_writes) <= limits.cost  # the answer, every prompt token a cache write, fits what was reserved


def test_a_reservation_past_every_counter_is_held_to_the_bound(tmp_path: Path) -> None:
    loaded = policy(tmp_path, {"usd_per_day": 1.0}, window=None)
    limits = accounting.limits_for(loaded, features(max_tokens=10**30, n=128), ("up",))
    assert limits.cost == MOST
    assert limits.tokens == MOST


# --- the cap sent upstream --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("endpoint", "field"), [("chat", "max_tokens"), ("completions", "max_tokens"),
                                                 ("responses", "max_output_tokens")])
def test_a_budgeted_request_without_a_cap_is_sent_with_the_routes_default(tmp_path: Path, endpoint: str,
                                                                          field: str) -> None:
    loaded = policy(tmp_path, {"usd_per_month": 5.0})
    body = {"model": "chat", "stream": True}
    assert accounting.capped(loaded, features(endpoint), body) == {**body, field: 100}
    assert body == {"model": "chat", "stream": True}  # the client's body is left as it came


@pytest.mark.parametrize(("budget", "endpoint", "max_tokens"), [
    (None, "chat", None),  # no budget: the upstream's own default stands
    ({"usd_per_day": 1.0}, "chat", 7),  # the client's own cap
    ({"usd_per_day": 1.0}, "embeddings", None),
])
def test_the_body_is_left_alone_otherwise(tmp_path: Path, budget: dict[str, Any] | None, endpoint: str,
                                          max_tokens: int | None) -> None:
    loaded = policy(tmp_path, budget)
    body = {"model": "chat"}
    assert accounting.capped(loaded, features(endpoint, max_tokens), body) is body


# --- usage ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("reported", "counted"), [
    ({"prompt_tokens": 10, "completion_tokens": 9}, Usage(10, 9)),
    ({"input_tokens": 10, "output_tokens": 9}, Usage(10, 9)),  # the Responses API's names
    ({"prompt_tokens": 12.0, "completion_tokens": 3.9}, Usage(12, 3)),  # floats count
    ({"prompt_tokens": -5, "completion_tokens": -10**19}, Usage(0, 0)),
    ({"prompt_tokens": True, "completion_tokens": "9"}, Usage(0, 0)),
    ({"prompt_tokens": 10**30, "completion_tokens": float("inf")}, Usage(MOST, MOST)),
    ({"prompt_tokens": float("nan")}, Usage(0, 0)),
    (None, Usage(0, 0)),
])
def test_usage_reads_positive_counts_only(reported: Any, counted: Usage) -> None:
    assert Usage.of(reported) == counted


def details(**parts: Any) -> dict[str, Any]:
    """A chat usage of 10 prompt tokens with these prompt_tokens_details."""
    return {"prompt_tokens": 10, "prompt_tokens_details": parts}


@pytest.mark.parametrize(("reported", "counted"), [
    ({"prompt_tokens": 10, "completion_tokens": 9, "prompt_tokens_details": {"cached_tokens": 4}}, Usage(10, 9, 4)),
    ({"input_tokens": 10, "output_tokens": 9, "input_tokens_details": {"cached_tokens": 4}}, Usage(10, 9, 4)),
    (details(cached_tokens=0, audio_tokens=0), Usage(10)),  # OpenAI's, nothing cached
    ({"prompt_tokens": 10, "prompt_tokens_details": None}, Usage(10)),  # vLLM's, without prompt details
    (details(cached_tokens=4, cache_creation_tokens=2), Usage(10, 0, 4, 2)),  # writes as litellm names them
    (details(cache_write_tokens=6), Usage(10, 0, 0, 6)),  # and as OpenRouter does
    # garbage counts as nothing; a part never exceeds the prompt, writes (the dearer) kept first
    (details(cached_tokens=-4, cache_creation_tokens="2"), Usage(10)),
    (details(cached_tokens=True), Usage(10)),
    (details(cached_tokens=4.0), Usage(10, 0, 4)),
    (details(cached_tokens=10**30), Usage(10, 0, 10)),
    (details(cached_tokens=8, cache_creation_tokens=6), Usage(10, 0, 4, 6)),
    (details(cache_creation_tokens=float("inf")), Usage(10, 0, 0, 10)),
    ({"prompt_tokens_details": {"cached_tokens": 4}}, Usage()),  # no prompt, no part of one
    ({"prompt_tokens": 10, "prompt_tokens_details": [4]}, Usage(10)),
])
def test_usage_reads_the_cache_parts_of_the_prompt_within_it(reported: Any, counted: Usage) -> None:
    assert Usage.of(reported) == counted


@pytest.mark.parametrize(("window", "n", "most"), [(4096, 1, 4096), (4096, 3, 3 * 4096),
                                                   (None, 2, 2 * accounting.UNKNOWN_WINDOW)])
def test_usage_past_the_window_times_n_is_clamped_and_counted(tmp_path: Path, window: int | None, n: int,
                                                              most: int) -> None:
    loaded = policy(tmp_path, window=window)
    metrics = Metrics()
    counted, cost = accounting.settle(metrics, loaded, "acme", "up", Usage(10**19, 10**19), n)
    assert counted == Usage(most, most)
    assert cost == pytest.approx(most * IN + most * OUT)
    assert metrics.registry.get_sample_value("switchyard_usage_clamped_total", {"upstream": "up"}) == 1
    tokens = {"tenant": "acme", "upstream": "up", "type": "prompt"}
    assert metrics.registry.get_sample_value("switchyard_tokens_total", tokens) == most


def test_usage_within_the_window_is_counted_as_reported(tmp_path: Path) -> None:
    loaded = policy(tmp_path)
    metrics = Metrics()
    counted, cost = accounting.settle(metrics, loaded, "acme", "up", Usage(4096, 4096))
    assert (counted, cost) == (Usage(4096, 4096), pytest.approx(4096 * (IN + OUT)))
    assert metrics.registry.get_sample_value("switchyard_usage_clamped_total", {"upstream": "up"}) is None


def test_plausible_clamps_each_kind_on_its_own() -> None:
    assert accounting.plausible(Usage(5, 50), 10) == Usage(5, 10)
    assert accounting.plausible(Usage(10, 10), 10) is None


def test_plausible_keeps_the_cache_parts_within_the_clamped_prompt() -> None:
    assert accounting.plausible(Usage(50, 5, 20, 30), 10) == Usage(10, 5, 0, 10)
    assert accounting.plausible(Usage(50, 5, 4, 2), 10) == Usage(10, 5, 4, 2)
    assert accounting.plausible(Usage(5, 50, 4, 1), 10) == Usage(5, 10, 4, 1)


def test_settle_prices_cache_reads_and_writes_and_counts_them(tmp_path: Path) -> None:
    loaded = policy(tmp_path, cache_read_per_mtok=0.1, cache_write_per_mtok=1.25)
    metrics = Metrics()
    counted, cost = accounting.settle(metrics, loaded, "acme", "up", Usage(100, 10, 60, 30))
    assert counted == Usage(100, 10, 60, 30)
    assert cost == pytest.approx((10 * 1.0 + 60 * 0.1 + 30 * 1.25 + 10 * 2.0) / 1e6)
    sample = metrics.registry.get_sample_value
    labels = {"tenant": "acme", "upstream": "up"}
    assert sample("switchyard_tokens_total", {**labels, "type": "prompt"}) == 100  # every prompt token, as before
    assert sample("switchyard_cache_tokens_total", {**labels, "kind": "read"}) == 60
    assert sample("switchyard_cache_tokens_total", {**labels, "kind": "write"}) == 30
    assert sample("switchyard_cost_usd_total", labels) == pytest.approx(cost)


def test_settle_without_cache_parts_counts_no_cache_tokens(tmp_path: Path) -> None:
    loaded = policy(tmp_path, cache_read_per_mtok=0.1, cache_write_per_mtok=1.25)
    metrics = Metrics()
    assert accounting.settle(metrics, loaded, "acme", "up", Usage(100, 10))[1] == pytest.approx(120 / 1e6)
    for kind in ("read", "write"):
        labels = {"tenant": "acme", "upstream": "up", "kind": kind}
        assert metrics.registry.get_sample_value("switchyard_cache_tokens_total", labels) is None


def test_the_baseline_cost_prices_the_cache_parts_at_the_baselines_prices(tmp_path: Path) -> None:
    path = write_policy(tmp_path, {
        "up": {"base_url": "http://127.0.0.1:9/v1", "model": "m",
               "cost": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}},
        "base": {"base_url": "http://127.0.0.1:9/v1", "model": "b",
                 "cost": {"input_per_mtok": 3.0, "output_per_mtok": 15.0, "cache_read_per_mtok": 0.3}}},
        {"chat": {"candidates": ["up"], "baseline": "base"}})
    baseline = accounting.baseline_cost(load_policy(path), "chat", Usage(100, 10, 60, 0))
    assert baseline == pytest.approx((40 * 3.0 + 60 * 0.3 + 10 * 15.0) / 1e6)


@pytest.mark.parametrize(("body", "counted"), [
    (b'{"usage": {"prompt_tokens": 10, "completion_tokens": 9}}', Usage(10, 9)),
    (b'{"usage": {"prompt_tokens": 1e400, "completion_tokens": 2}}', Usage(MOST, 2)),  # orjson refuses infinity
    (b"[" * 100_000 + b"]" * 100_000, Usage()),  # nested past both parsers
    (b"not json", Usage()),
    (b"\xff\xfe", Usage()),
])
def test_a_whole_body_is_read_for_its_usage_whatever_it_holds(body: bytes, counted: Usage) -> None:
    assert Usage.of_body(body) == counted
