"""The routing decision (steps 4 to 6): filters, their error codes, rules, ordering, and full upstreams moved back."""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.errors import NoCandidate
from gateway.routing.policy.decide import NO_LIVE, Decision, Features, Live, completion_estimate, decide
from gateway.routing.policy.loader import load_policy
from gateway.routing.policy.model import Policy
from tests.conftest import KEY, OTHER_KEY, key_hash

TENANTS: dict[str, Any] = {"acme": {"keys": [key_hash(KEY)]}, "other": {"keys": [key_hash(OTHER_KEY)]}}
REQUEST = Features(route="chat", tenant="acme", prompt_tokens=10)


def up(region: str | None = "eu-west", hosting: str = "self", **extra: Any) -> dict[str, Any]:
    """An upstream spec; token-priced at $1/$1 per million unless cost is given."""
    spec: dict[str, Any] = {"base_url": "http://upstream:8000/v1", "model": "m", "hosting": hosting,
                            "cost": {"input_per_mtok": 1.0, "output_per_mtok": 1.0}}
    if region is not None:
        spec["region"] = region
    spec.update(extra)
    return spec


def write_doc(folder: Path, upstreams: dict[str, Any], models: dict[str, Any], **sections: Any) -> Path:
    doc: dict[str, Any] = {"version": 1, "upstreams": upstreams, "models": models, "tenants": TENANTS}
    doc.update(sections)
    path = folder / "policy.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def make(tmp_path: Path, upstreams: dict[str, Any], models: dict[str, Any] | list[str], **sections: Any) -> Policy:
    """Load a policy; a list of names for models means one priority route 'chat' over them."""
    routes = {"chat": {"candidates": models}} if isinstance(models, list) else models
    return load_policy(write_doc(tmp_path, upstreams, routes, **sections), {})


def three(**extra: dict[str, Any]) -> dict[str, Any]:
    """Upstreams a, b, c (all self-hosted in eu-west unless overridden)."""
    return {name: up(**extra.get(name, {})) for name in ("a", "b", "c")}


def refused(policy: Policy, features: Features, live: Live = NO_LIVE) -> NoCandidate:
    with pytest.raises(NoCandidate) as caught:
        decide(policy, features, live)
    return caught.value


# Ordering ---------------------------------------------------------------------------------------------------------


def test_priority_keeps_list_order(tmp_path: Path) -> None:
    policy = make(tmp_path, three(), ["c", "a", "b"])
    decision = decide(policy, REQUEST)
    assert decision == Decision(route="chat", candidates=("c", "a", "b"), rule=None, objective="priority",
                                data_class=None, excluded=())


def cost_policy(tmp_path: Path, default_max_tokens: int = 512) -> Policy:
    """gpu: $3.6/h at 1000 tok/s = $1 per million tokens both ways; token: $0.5 in, $4 out; dear: $10/$10."""
    upstreams = {
        "dear": up(hosting="third_party", cost={"input_per_mtok": 10.0, "output_per_mtok": 10.0}),
        "token": up(hosting="third_party", cost={"input_per_mtok": 0.5, "output_per_mtok": 4.0}),
        "gpu": up(cost={"gpu_hour_usd": 3.6, "tokens_per_second": 1000}),
    }
    route = {"candidates": ["dear", "token", "gpu"], "objective": "cost", "default_max_tokens": default_max_tokens}
    return make(tmp_path, upstreams, {"chat": route})


@pytest.mark.parametrize(("prompt_tokens", "max_tokens", "expected"), [
    (100_000, 10, ("token", "gpu", "dear")),   # prompt-heavy: 0.5 per Mtok beats the GPU's 1.0
    (10, 100_000, ("gpu", "token", "dear")),   # completion-heavy: the GPU's 1.0 beats 4.0
])
def test_cost_orders_by_estimated_request_cost(tmp_path: Path, prompt_tokens: int, max_tokens: int,
                                               expected: tuple[str, ...]) -> None:
    policy = cost_policy(tmp_path)
    decision = decide(policy, replace(REQUEST, prompt_tokens=prompt_tokens, max_tokens=max_tokens))
    assert decision.candidates == expected
    assert decision.objective == "cost"


@pytest.mark.parametrize(("default_max_tokens", "expected"), [
    (1, ("token", "gpu", "dear")),
    (100_000, ("gpu", "token", "dear")),
])
def test_cost_uses_the_routes_default_max_tokens_when_the_request_gives_none(
        tmp_path: Path, default_max_tokens: int, expected: tuple[str, ...]) -> None:
    policy = cost_policy(tmp_path, default_max_tokens)
    assert decide(policy, replace(REQUEST, prompt_tokens=10_000)).candidates == expected


def test_cost_ties_keep_list_order(tmp_path: Path) -> None:
    same = {"input_per_mtok": 1.0, "output_per_mtok": 2.0}
    upstreams = {"x": up(cost=same), "y": up(cost=same), "cheap": up(cost={"input_per_mtok": 0.1,
                                                                           "output_per_mtok": 0.1}),
                 "z": up(cost=same)}
    for candidates, expected in ((["y", "x", "cheap", "z"], ("cheap", "y", "x", "z")),
                                 (["z", "cheap", "x", "y"], ("cheap", "z", "x", "y"))):
        policy = make(tmp_path, upstreams, {"chat": {"candidates": candidates, "objective": "cost"}})
        assert decide(policy, REQUEST).candidates == expected


def latency_policy(tmp_path: Path, slo_ms: float | None = None) -> Policy:
    route: dict[str, Any] = {"candidates": ["a", "b", "c", "d"], "objective": "latency"}
    if slo_ms is not None:
        route["latency_slo"] = {"ttft_p95_ms": slo_ms}
    return make(tmp_path, {n: up() for n in "abcd"}, {"chat": route})


@pytest.mark.parametrize(("p95", "expected"), [
    ({}, ("a", "b", "c", "d")),
    ({"a": 300.0, "c": 100.0}, ("b", "d", "c", "a")),
    ({"a": 40.0, "b": 30.0, "c": 20.0, "d": 10.0}, ("d", "c", "b", "a")),
    ({"a": 50.0, "b": 50.0, "c": 10.0, "d": 50.0}, ("c", "a", "b", "d")),
])
def test_latency_tries_unmeasured_first_in_list_order_then_fastest_p95(
        tmp_path: Path, p95: dict[str, float], expected: tuple[str, ...]) -> None:
    decision = decide(latency_policy(tmp_path), REQUEST, Live(ttft_p95_ms=p95))
    assert decision.candidates == expected
    assert decision.objective == "latency"


@pytest.mark.parametrize(("p95", "expected"), [
    ({"a": 800.0, "b": 200.0, "c": 400.0, "d": 500.0}, ("b", "c", "d")),   # over the SLO: skipped
    ({"a": 900.0, "b": 700.0, "c": 600.0, "d": 800.0}, ("c", "b", "d", "a")),   # none meets it: all, fastest first
    ({"a": 501.0, "b": 100.0, "c": 499.0, "d": 900.0}, ("b", "c")),
    ({"a": 900.0, "c": 600.0}, ("b", "d", "c", "a")),   # only unmeasured could meet it: all stay, as fallbacks
    ({"a": 900.0, "c": 100.0}, ("b", "d", "c")),   # one measured meets it: the slow one goes, unmeasured stay
])
def test_latency_slo_skips_slow_candidates_only_while_one_meets_it(
        tmp_path: Path, p95: dict[str, float], expected: tuple[str, ...]) -> None:
    decision = decide(latency_policy(tmp_path, slo_ms=500), REQUEST, Live(ttft_p95_ms=p95))
    assert decision.candidates == expected


def test_latency_slo_does_not_apply_to_other_objectives(tmp_path: Path) -> None:
    route = {"candidates": ["a", "b"], "objective": "priority", "latency_slo": {"ttft_p95_ms": 100}}
    policy = make(tmp_path, three(), {"chat": route})
    assert decide(policy, REQUEST, Live(ttft_p95_ms={"a": 900.0, "b": 50.0})).candidates == ("a", "b")


# Rules ------------------------------------------------------------------------------------------------------------


def test_the_first_matching_rule_wins_and_is_named(tmp_path: Path) -> None:
    rules = [{"name": "never", "match": {"tenant": "other"}, "prefer": ["c"]},
             {"name": "first", "match": {"route": "chat"}, "prefer": ["b"]},
             {"name": "second", "match": {}, "prefer": ["c"]}]
    policy = make(tmp_path, three(), ["a", "b", "c"], rules=rules)
    decision = decide(policy, REQUEST)
    assert decision.rule == "first"
    assert decision.candidates == ("b", "a", "c")
    other = decide(policy, replace(REQUEST, tenant="other"))
    assert (other.rule, other.candidates) == ("never", ("c", "a", "b"))


def test_no_rule_matches_leaves_the_route_alone(tmp_path: Path) -> None:
    rules = [{"name": "big", "match": {"prompt_tokens_over": 1000}, "exclude": ["a"]}]
    decision = decide(make(tmp_path, three(), ["a", "b", "c"], rules=rules), REQUEST)
    assert (decision.rule, decision.candidates, decision.excluded) == (None, ("a", "b", "c"), ())


@pytest.mark.parametrize(("match", "hit", "miss"), [
    ({"route": "chat"}, {}, {"route": "batch"}),
    ({"route": ["batch", "chat"]}, {}, {"route": "other"}),
    ({"tenant": "acme"}, {}, {"tenant": "other"}),
    ({"data_class": "personal"}, {"data_class": "personal"}, {"data_class": "public"}),
    ({"data_class": "personal"}, {"data_class": "personal"}, {"data_class": None}),
    ({"header": {"X-Priority": "low"}}, {"headers": {"x-priority": "low"}}, {"headers": {"x-priority": "high"}}),
    ({"header": {"x-priority": "low"}}, {"headers": {"x-priority": "low"}}, {"headers": {}}),
    ({"prompt_tokens_over": 100}, {"prompt_tokens": 101}, {"prompt_tokens": 100}),
    ({"has_tools": True}, {"has_tools": True}, {"has_tools": False}),
    ({"has_tools": False}, {"has_tools": False}, {"has_tools": True}),
    ({"stream": True}, {"stream": True}, {"stream": False}),
    ({"stream": False}, {"stream": False}, {"stream": True}),
    ({"tenant": "acme", "stream": True}, {"stream": True}, {"tenant": "other", "stream": True}),
])
def test_each_match_condition(tmp_path: Path, match: dict[str, Any], hit: dict[str, Any],
                              miss: dict[str, Any]) -> None:
    routes = {name: {"candidates": ["a", "b"]} for name in ("chat", "batch", "other")}
    classes: dict[str, Any] = {"public": {}, "personal": {}}
    upstreams = {name: up(capabilities=["tools"]) for name in ("a", "b")}
    policy = make(tmp_path, upstreams, routes, data_classes=classes, rules=[{"name": "r", "match": match,
                                                                              "prefer": ["b"]}])
    matched = decide(policy, replace(REQUEST, **hit))
    assert (matched.rule, matched.candidates) == ("r", ("b", "a"))
    missed = decide(policy, replace(REQUEST, **miss))
    assert (missed.rule, missed.candidates) == (None, ("a", "b"))


def test_prefer_moves_to_the_front_in_its_own_order(tmp_path: Path) -> None:
    upstreams = {n: up() for n in "abcde"}
    policy = make(tmp_path, upstreams, ["a", "b", "c", "d"], rules=[{"name": "r", "prefer": ["d", "b"]}])
    assert decide(policy, REQUEST).candidates == ("d", "b", "a", "c")


def test_prefer_never_adds_an_upstream_that_is_not_a_candidate(tmp_path: Path) -> None:
    policy = make(tmp_path, three(), ["a", "b"], rules=[{"name": "r", "prefer": ["c", "b"]}])
    decision = decide(policy, REQUEST)
    assert decision.candidates == ("b", "a")


def test_prefer_never_brings_back_a_filtered_upstream(tmp_path: Path) -> None:
    upstreams = three(b={"hosting": "third_party"})
    policy = make(tmp_path, upstreams, ["a", "b", "c"], data_classes={"personal": {"hosting": ["self"]}},
                  rules=[{"name": "r", "prefer": ["b"], "exclude": ["c"]}])
    decision = decide(policy, replace(REQUEST, data_class="personal"))
    assert decision.candidates == ("a",)
    assert set(decision.excluded) == {("c", "rule"), ("b", "data_class")}


def test_exclude_removes_and_records_the_rule_as_reason(tmp_path: Path) -> None:
    policy = make(tmp_path, three(), ["a", "b", "c"], rules=[{"name": "r", "exclude": ["a", "c"]}])
    decision = decide(policy, REQUEST)
    assert decision.candidates == ("b",)
    assert decision.excluded == (("a", "rule"), ("c", "rule"))


def test_a_rules_objective_overrides_the_routes(tmp_path: Path) -> None:
    upstreams = {"dear": up(cost={"input_per_mtok": 9.0, "output_per_mtok": 9.0}),
                 "cheap": up(cost={"input_per_mtok": 1.0, "output_per_mtok": 1.0})}
    rules = [{"name": "batch", "match": {"header": {"x-priority": "low"}}, "objective": "cost"}]
    policy = make(tmp_path, upstreams, {"chat": {"candidates": ["dear", "cheap"], "objective": "priority"}},
                  rules=rules)
    low = decide(policy, replace(REQUEST, headers={"x-priority": "low"}))
    assert (low.objective, low.candidates, low.rule) == ("cost", ("cheap", "dear"), "batch")
    plain = decide(policy, REQUEST)
    assert (plain.objective, plain.candidates) == ("priority", ("dear", "cheap"))


def test_a_rule_without_objective_keeps_the_routes(tmp_path: Path) -> None:
    upstreams = {"dear": up(cost={"input_per_mtok": 9.0, "output_per_mtok": 9.0}),
                 "cheap": up(cost={"input_per_mtok": 1.0, "output_per_mtok": 1.0})}
    policy = make(tmp_path, upstreams, {"chat": {"candidates": ["dear", "cheap"], "objective": "cost"}},
                  rules=[{"name": "r", "exclude": []}])
    decision = decide(policy, REQUEST)
    assert (decision.rule, decision.objective, decision.candidates) == ("r", "cost", ("cheap", "dear"))


def test_prefer_applies_after_the_objective(tmp_path: Path) -> None:
    upstreams = {"dear": up(cost={"input_per_mtok": 9.0, "output_per_mtok": 9.0}),
                 "mid": up(cost={"input_per_mtok": 5.0, "output_per_mtok": 5.0}),
                 "cheap": up(cost={"input_per_mtok": 1.0, "output_per_mtok": 1.0})}
    policy = make(tmp_path, upstreams, ["dear", "mid", "cheap"],
                  rules=[{"name": "r", "objective": "cost", "prefer": ["dear"]}])
    assert decide(policy, REQUEST).candidates == ("dear", "cheap", "mid")


# Filters and their error codes -------------------------------------------------------------------------------------

RESIDENCY_UPSTREAMS = {
    "self-eu": up("eu-west", "self"),
    "self-us": up("us", "self"),
    "cloud-eu": up("eu-west", "third_party"),
    "cloud-us": up("us", "third_party"),
}
ALL_FOUR = list(RESIDENCY_UPSTREAMS)


@pytest.mark.parametrize(("data_class", "expected", "excluded"), [
    ({}, ("self-eu", "self-us", "cloud-eu", "cloud-us"), ()),
    ({"hosting": ["self"]}, ("self-eu", "self-us"), (("cloud-eu", "data_class"), ("cloud-us", "data_class"))),
    ({"regions": ["us"]}, ("self-us", "cloud-us"), (("self-eu", "data_class"), ("cloud-eu", "data_class"))),
    ({"hosting": ["self"], "regions": ["eu-west"]}, ("self-eu",),
     (("cloud-eu", "data_class"), ("cloud-us", "data_class"), ("self-us", "data_class"))),
    ({"hosting": ["self", "third_party"], "regions": ["eu-west", "us"]},
     ("self-eu", "self-us", "cloud-eu", "cloud-us"), ()),
])
def test_the_data_class_limits_hosting_and_regions(tmp_path: Path, data_class: dict[str, Any],
                                                   expected: tuple[str, ...],
                                                   excluded: tuple[tuple[str, str], ...]) -> None:
    policy = make(tmp_path, RESIDENCY_UPSTREAMS, ALL_FOUR, data_classes={"public": {}, "limited": data_class})
    decision = decide(policy, replace(REQUEST, data_class="limited"))
    assert decision.candidates == expected
    assert decision.excluded == excluded
    assert decision.data_class == "limited"
    assert decide(policy, replace(REQUEST, data_class="public")).candidates == tuple(ALL_FOUR)


def test_the_tenants_regions_limit_candidates(tmp_path: Path) -> None:
    tenants = {**TENANTS, "acme": {"keys": [key_hash(KEY)], "regions": ["us"]}}
    policy = make(tmp_path, RESIDENCY_UPSTREAMS, ALL_FOUR, tenants=tenants)
    decision = decide(policy, REQUEST)
    assert decision.candidates == ("self-us", "cloud-us")
    assert decision.excluded == (("self-eu", "tenant_region"), ("cloud-eu", "tenant_region"))
    assert decide(policy, replace(REQUEST, tenant="other")).candidates == tuple(ALL_FOUR)


def test_an_upstream_without_region_never_serves_a_region_limited_request(tmp_path: Path) -> None:
    upstreams = {"nowhere": up(region=None), "eu": up("eu-west")}
    tenants = {**TENANTS, "acme": {"keys": [key_hash(KEY)], "regions": ["eu-west"]}}
    policy = make(tmp_path, upstreams, ["nowhere", "eu"], tenants=tenants)
    assert decide(policy, REQUEST).candidates == ("eu",)


@pytest.mark.parametrize(("data_class", "tenant_regions"), [
    ({"hosting": ["self"]}, None),                     # only third-party upstreams
    ({"regions": ["us"]}, None),                       # only eu-west upstreams
    ({}, ["us"]),                                      # tenant limited to where nothing of the route runs
    ({"regions": ["eu-west"]}, ["us"]),                # each allows something, together nothing
])
def test_no_allowed_residency_is_refused_with_403(tmp_path: Path, data_class: dict[str, Any],
                                                  tenant_regions: list[str] | None) -> None:
    upstreams = {"cloud-eu": up("eu-west", "third_party"), "us-box": up("us", "third_party")}
    tenant: dict[str, Any] = {"keys": [key_hash(KEY)]}
    if tenant_regions is not None:
        tenant["regions"] = tenant_regions
    policy = make(tmp_path, upstreams, {"chat": {"candidates": ["cloud-eu"]}, "us": {"candidates": ["us-box"]}},
                  data_classes={"c": data_class}, tenants={"acme": tenant})
    error = refused(policy, replace(REQUEST, data_class="c"))
    assert (error.code, error.status, error.type) == ("residency_unavailable", 403, "invalid_request_error")
    assert "route 'chat'" in error.message


NEEDS = [({"has_tools": True}, "tools", "tools"), ({"wants_json": True}, "json", "response_format"),
         ({"has_images": True}, "vision", "messages"), ({"endpoint": "responses"}, "responses", None)]


@pytest.mark.parametrize(("need", "capability", "param"), NEEDS)
def test_listed_capabilities_must_cover_the_request(tmp_path: Path, need: dict[str, Any], capability: str,
                                                    param: str | None) -> None:
    upstreams = {"none": up(capabilities=[]), "able": up(capabilities=[capability]),
                 "other": up(capabilities=["continuation"])}
    policy = make(tmp_path, upstreams, ["none", "able", "other"])
    decision = decide(policy, replace(REQUEST, **need))
    assert decision.candidates == ("able",)
    assert decision.excluded == (("none", "capability"), ("other", "capability"))
    assert decide(policy, REQUEST).candidates == ("none", "able", "other")
    narrow = make(tmp_path, upstreams, ["none", "other"])
    error = refused(narrow, replace(REQUEST, **need))
    assert (error.code, error.status, error.param) == ("capability_unavailable", 400, param)
    assert error.message.startswith(f"no allowed upstream of route 'chat' supports '{capability}'")


@pytest.mark.parametrize(("need", "capability", "param"), NEEDS)
def test_an_upstream_listing_no_capabilities_gets_every_request_feature(tmp_path: Path, need: dict[str, Any],
                                                                       capability: str, param: str | None) -> None:
    """Without a list the upstream's own answer decides; a list (even an empty one) narrows."""
    policy = make(tmp_path, {"unlisted": up(), "listed": up(capabilities=["continuation"])}, ["unlisted", "listed"])
    decision = decide(policy, replace(REQUEST, **need))
    assert (decision.candidates, decision.excluded) == (("unlisted",), (("listed", "capability"),))


def test_continuation_is_never_implied(tmp_path: Path) -> None:
    policy = make(tmp_path, {"unlisted": up(), "listed": up(capabilities=["continuation"])}, ["unlisted", "listed"])
    unlisted, listed = policy.doc.upstreams["unlisted"], policy.doc.upstreams["listed"]
    assert not unlisted.supports("continuation")
    assert "continuation" not in unlisted.capabilities
    assert listed.supports("continuation")
    assert not listed.supports("tools")


def test_every_need_must_be_covered_by_the_same_upstream(tmp_path: Path) -> None:
    upstreams = {"tools": up(capabilities=["tools"]), "json": up(capabilities=["json"]),
                 "both": up(capabilities=["tools", "json"])}
    policy = make(tmp_path, upstreams, ["tools", "json", "both"])
    assert decide(policy, replace(REQUEST, has_tools=True, wants_json=True)).candidates == ("both",)
    error = refused(make(tmp_path, upstreams, ["tools", "json"]), replace(REQUEST, has_tools=True, wants_json=True))
    assert (error.code, error.param) == ("capability_unavailable", "response_format")
    assert "supports 'json'" in error.message
    assert "together with 'tools'" in error.message


class EveryKind:
    """A catalog that knows every upstream kind and no price."""

    def knows(self, kind: str) -> bool:
        return True

    def price(self, kind: str, model: str) -> tuple[float, float] | None:
        return None


def test_a_translated_upstream_cannot_serve_other_endpoints(tmp_path: Path) -> None:
    claude = {"kind": "anthropic", "model": "claude-x", "cost": up()["cost"]}
    path = write_doc(tmp_path, {"claude": claude}, {"chat": {"candidates": ["claude"]}})
    policy = load_policy(path, {}, EveryKind())
    assert decide(policy, replace(REQUEST, has_tools=True)).candidates == ("claude",)
    error = refused(policy, replace(REQUEST, endpoint="completions"))
    assert error.code == "capability_unavailable"
    assert "can serve completions" in error.message
    assert "chat completions only" in error.message


@pytest.mark.parametrize(("prompt_tokens", "max_tokens", "expected"), [
    (900, 100, ("small", "big", "unbounded")),   # exactly the small window: fits
    (901, 100, ("big", "unbounded")),
    (500, 600, ("big", "unbounded")),
    (488, None, ("small", "big", "unbounded")),  # 488 + default 512 = 1000
    (489, None, ("big", "unbounded")),
    (10_000, None, ("unbounded",)),
])
def test_the_context_window_holds_prompt_plus_max_tokens(tmp_path: Path, prompt_tokens: int, max_tokens: int | None,
                                                         expected: tuple[str, ...]) -> None:
    upstreams = {"small": up(context_window=1000), "big": up(context_window=8000), "unbounded": up()}
    policy = make(tmp_path, upstreams, ["small", "big", "unbounded"])
    decision = decide(policy, replace(REQUEST, prompt_tokens=prompt_tokens, max_tokens=max_tokens))
    assert decision.candidates == expected
    assert all(reason == "context_window" for _, reason in decision.excluded)


def test_the_routes_default_max_tokens_counts_against_the_window(tmp_path: Path) -> None:
    upstreams = {"small": up(context_window=1000), "big": up(context_window=8000)}
    policy = make(tmp_path, upstreams, {"chat": {"candidates": ["small", "big"], "default_max_tokens": 950}})
    assert decide(policy, replace(REQUEST, prompt_tokens=100)).candidates == ("big",)
    assert decide(policy, replace(REQUEST, prompt_tokens=100, max_tokens=10)).candidates == ("small", "big")


def test_n_does_not_widen_the_window_each_choice_needs(tmp_path: Path) -> None:
    upstreams = {"small": up(context_window=1000), "big": up(context_window=8000)}
    policy = make(tmp_path, upstreams, ["small", "big"])
    assert decide(policy, replace(REQUEST, prompt_tokens=900, max_tokens=100, n=50)).candidates == ("small", "big")


def test_embeddings_need_only_their_prompt_in_the_window(tmp_path: Path) -> None:
    """A BERT-class embedding model has a 512-token window; the route's default_max_tokens is no part of it."""
    policy = make(tmp_path, {"bert": up(context_window=512)}, ["bert"])
    assert decide(policy, replace(REQUEST, endpoint="embeddings", prompt_tokens=512)).candidates == ("bert",)
    error = refused(policy, replace(REQUEST, endpoint="embeddings", prompt_tokens=513))
    assert error.code == "context_length_exceeded"
    assert "max_tokens" not in error.message


@pytest.mark.parametrize(("features", "completion"), [
    (replace(REQUEST, max_tokens=1000), 1000),
    (replace(REQUEST, max_tokens=1000, n=100), 100_000),
    (replace(REQUEST, n=4), 4 * 512),
    (replace(REQUEST, endpoint="completions", max_tokens=10, n=3), 30),
    (replace(REQUEST, endpoint="responses"), 512),
    (replace(REQUEST, endpoint="embeddings", n=5), 0),
])
def test_the_completion_estimate_is_every_choice_at_its_cap(tmp_path: Path, features: Features,
                                                            completion: int) -> None:
    policy = make(tmp_path, {"a": up()}, ["a"])
    assert completion_estimate(features, policy.doc.models["chat"]) == completion


def test_n_ranks_by_the_cost_of_every_choice(tmp_path: Path) -> None:
    policy = cost_policy(tmp_path)
    # 10_000 prompt tokens and 100 completion: the prompt decides (token first, $5400e-6 against the gpu's
    # $10100e-6); a hundred choices make it completion-heavy ($45000e-6 against $20000e-6: gpu first)
    assert decide(policy, replace(REQUEST, prompt_tokens=10_000, max_tokens=100)).candidates[0] == "token"
    assert decide(policy, replace(REQUEST, prompt_tokens=10_000, max_tokens=100, n=100)).candidates[0] == "gpu"


def test_nothing_holding_the_prompt_is_refused_with_400(tmp_path: Path) -> None:
    policy = make(tmp_path, {"small": up(context_window=1000)}, ["small"])
    error = refused(policy, replace(REQUEST, prompt_tokens=2000))
    assert (error.code, error.status) == ("context_length_exceeded", 400)
    assert "2000" in error.message


def test_open_circuits_are_skipped(tmp_path: Path) -> None:
    policy = make(tmp_path, three(), ["a", "b", "c"])
    decision = decide(policy, REQUEST, Live(open_circuits=frozenset({"a", "c"})))
    assert decision.candidates == ("b",)
    assert decision.excluded == (("a", "circuit_open"), ("c", "circuit_open"))


def test_every_circuit_open_is_refused_with_503(tmp_path: Path) -> None:
    policy = make(tmp_path, three(), ["a", "b"])
    error = refused(policy, REQUEST, Live(open_circuits=frozenset({"a", "b"})))
    assert (error.code, error.status, error.type) == ("no_healthy_upstream", 503, "server_error")


FAILING = {"data_class": "personal", "has_tools": True, "prompt_tokens": 5000}


@pytest.mark.parametrize(("fixed", "code"), [
    ({}, "residency_unavailable"),
    ({"data_class": None}, "capability_unavailable"),
    ({"data_class": None, "has_tools": False}, "context_length_exceeded"),
    ({"data_class": None, "has_tools": False, "prompt_tokens": 10}, "no_healthy_upstream"),
])
def test_the_first_filter_to_empty_the_set_names_the_error(tmp_path: Path, fixed: dict[str, Any],
                                                           code: str) -> None:
    """A request that every filter would refuse is a residency error; each fix reveals the next filter."""
    policy = make(tmp_path, {"cloud": up(hosting="third_party", context_window=1000, capabilities=["json"])}, ["cloud"],
                  data_classes={"public": {}, "personal": {"hosting": ["self"]}})
    features = replace(REQUEST, **{**FAILING, **fixed})
    assert refused(policy, features, Live(open_circuits=frozenset({"cloud"}))).code == code


def test_excluded_reasons_follow_the_filters(tmp_path: Path) -> None:
    upstreams = {"ruled": up(), "cloud": up(hosting="third_party"), "us": up("us"), "plain": up(capabilities=[]),
                 "tiny": up(capabilities=["tools"], context_window=100), "down": up(capabilities=["tools"]),
                 "ok": up(capabilities=["tools"])}
    tenants = {**TENANTS, "acme": {"keys": [key_hash(KEY)], "regions": ["eu-west"]}}
    policy = make(tmp_path, upstreams, list(upstreams), tenants=tenants,
                  data_classes={"personal": {"hosting": ["self"]}}, rules=[{"name": "r", "exclude": ["ruled"]}])
    features = replace(REQUEST, data_class="personal", has_tools=True, prompt_tokens=200)
    decision = decide(policy, features, Live(open_circuits=frozenset({"down"})))
    assert decision.candidates == ("ok",)
    assert decision.excluded == (("ruled", "rule"), ("cloud", "data_class"), ("us", "tenant_region"),
                                 ("plain", "capability"), ("tiny", "context_window"), ("down", "circuit_open"))


def test_a_rule_excluding_every_candidate_is_not_blamed_on_the_prompt(tmp_path: Path) -> None:
    policy = make(tmp_path, three(), ["a", "b"], rules=[{"name": "r", "exclude": ["a", "b"]}])
    error = refused(policy, REQUEST)
    assert (error.code, error.status) == ("policy_denied", 403)
    assert "rule 'r'" in error.message


# Property: residency is never widened ------------------------------------------------------------------------------

REGIONS = ("eu-west", "us", "ap")
HOSTINGS = ("self", "third_party")


@st.composite
def residency_cases(draw: st.DrawFn) -> tuple[dict[str, Any], Features]:
    count = draw(st.integers(1, 5))
    upstreams = {f"u{i}": up(draw(st.sampled_from(REGIONS)), draw(st.sampled_from(HOSTINGS))) for i in range(count)}
    used = sorted({spec["region"] for spec in upstreams.values()})
    regions = st.lists(st.sampled_from(used), unique=True)
    limited: dict[str, Any] = {}
    if draw(st.booleans()):
        limited["hosting"] = draw(st.lists(st.sampled_from(HOSTINGS), unique=True))
    if draw(st.booleans()):
        limited["regions"] = draw(regions)
    tenants: dict[str, Any] = {}
    for i, key in enumerate((KEY, OTHER_KEY)):
        tenant: dict[str, Any] = {"keys": [key_hash(key)]}
        if draw(st.booleans()):
            tenant["regions"] = draw(regions)
        tenants[f"t{i}"] = tenant
    names = list(upstreams)
    routes = {f"r{i}": {"candidates": draw(st.lists(st.sampled_from(names), min_size=1, unique=True)),
                        "objective": draw(st.sampled_from(("cost", "latency", "priority")))} for i in range(2)}
    rules = [{"name": "prefer-all", "match": {"stream": True}, "prefer": draw(st.permutations(names))}]
    doc = {"version": 1, "upstreams": upstreams, "models": routes, "tenants": tenants,
           "data_classes": {"open": {}, "limited": limited}, "rules": rules}
    features = Features(route=draw(st.sampled_from(list(routes))), tenant=draw(st.sampled_from(list(tenants))),
                        prompt_tokens=draw(st.integers(0, 5000)), stream=draw(st.booleans()),
                        data_class=draw(st.sampled_from(("open", "limited", None))))
    return doc, features


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(residency_cases())
def test_candidates_always_respect_residency(case: tuple[dict[str, Any], Features]) -> None:
    doc, features = case
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "policy.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        policy = load_policy(path, {})
    route = doc["models"][features.route]["candidates"]
    limited = doc["data_classes"]["limited"] if features.data_class == "limited" else {}
    tenant_regions = doc["tenants"][features.tenant].get("regions")

    def allowed(name: str) -> bool:
        spec = doc["upstreams"][name]
        return (spec["hosting"] in limited.get("hosting", HOSTINGS)
                and spec["region"] in limited.get("regions", REGIONS)
                and (tenant_regions is None or spec["region"] in tenant_regions))

    expected = [name for name in route if allowed(name)]
    if not expected:
        with pytest.raises(NoCandidate) as caught:
            decide(policy, features)
        assert caught.value.code == "residency_unavailable"
        return
    decision = decide(policy, features)
    assert set(decision.candidates) <= set(route)
    assert all(allowed(name) for name in decision.candidates)
    assert sorted(decision.candidates) == sorted(expected)
    assert len(decision.candidates) == len(set(decision.candidates))


class _Translating:
    """A catalog that knows one translated kind, as litellm's would."""

    def knows(self, kind: str) -> bool:
        return kind in ("openai", "anthropic")

    def price(self, kind: str, model: str) -> tuple[float, float] | None:
        return None


@pytest.mark.parametrize(("endpoint", "expected"), [("chat", ("claude", "local")), ("embeddings", ("local",)),
                                                    ("completions", ("local",))])
def test_translated_upstreams_serve_chat_only(tmp_path: Path, endpoint: str, expected: tuple[str, ...]) -> None:
    doc = {"version": 1,
           "upstreams": {"claude": {"kind": "anthropic", "model": "claude-x", "hosting": "third_party",
                                    "cost": {"input_per_mtok": 3, "output_per_mtok": 15}},
                         "local": {"base_url": "http://127.0.0.1:1/v1", "model": "m", "hosting": "self",
                                   "cost": {"input_per_mtok": 1, "output_per_mtok": 1}}},
           "models": {"chat": {"candidates": ["claude", "local"]}},
           "tenants": {"t": {"keys": ["sha256:" + "0" * 64]}}}
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(doc))
    policy = load_policy(path, {}, catalog=_Translating())
    features = Features(route="chat", tenant="t", prompt_tokens=10, endpoint=endpoint)
    assert decide(policy, features).candidates == expected


# --- full upstreams (capacity): moved behind the rest in order, never excluded, nothing added --------------------

SPILL_POLICY = f"""\
version: 1
upstreams:
  qwen-a: {{base_url: "http://a:8000/v1", model: q, hosting: self, region: eu,
            cost: {{input_per_mtok: 0.1, output_per_mtok: 0.1}}}}
  qwen-b: {{base_url: "http://b:8000/v1", model: q, hosting: self, region: eu,
            cost: {{input_per_mtok: 0.2, output_per_mtok: 0.2}}}}
  api-1: {{base_url: "http://c/v1", model: g, region: us, cost: {{input_per_mtok: 2, output_per_mtok: 8}}}}
  api-2: {{base_url: "http://d/v1", model: g, region: us, cost: {{input_per_mtok: 3, output_per_mtok: 9}}}}
models:
  chat: {{candidates: [api-2, qwen-b, api-1, qwen-a], objective: cost}}
  pinned: {{candidates: [qwen-a, api-1], objective: priority}}
data_classes:
  public: {{}}
  personal: {{hosting: [self]}}
rules:
  - {{name: prefer-b, match: {{route: pinned, header: {{x-b: "1"}}}}, prefer: [api-1]}}
tenants:
  acme: {{keys: ["{key_hash(KEY)}"]}}
"""


@pytest.fixture
def spill_policy(tmp_path: Path) -> Policy:
    (tmp_path / "p.yaml").write_text(SPILL_POLICY)
    return load_policy(tmp_path / "p.yaml")


def order_when_full(spill_policy: Policy, full: set[str], route: str = "chat", **features: object) -> tuple[str, ...]:
    decision = decide(spill_policy, Features(route, "acme", 100, **features),  # type: ignore[arg-type]
                      Live(full=frozenset(full)))
    return decision.candidates


def test_nothing_full_keeps_the_objectives_order(spill_policy: Policy) -> None:
    assert order_when_full(spill_policy, set()) == ("qwen-a", "qwen-b", "api-1", "api-2")


def test_a_full_upstream_moves_behind_every_open_one_keeping_their_order(spill_policy: Policy) -> None:
    assert order_when_full(spill_policy, {"qwen-a"}) == ("qwen-b", "api-1", "api-2", "qwen-a")
    assert order_when_full(spill_policy, {"qwen-a", "qwen-b"}) == ("api-1", "api-2", "qwen-a", "qwen-b")
    assert order_when_full(spill_policy, {"api-1"}) == ("qwen-a", "qwen-b", "api-2", "api-1")


def test_the_decision_names_what_it_moved_and_the_first_choice_it_spilled_from(spill_policy: Policy) -> None:
    decision = decide(spill_policy, Features("chat", "acme", 100), Live(full=frozenset({"qwen-a", "api-2"})))
    assert decision.moved_back == ("qwen-a", "api-2")
    assert decision.spilled_from == "qwen-a"
    later = decide(spill_policy, Features("chat", "acme", 100), Live(full=frozenset({"api-2"})))
    assert later.spilled_from is None
    assert later.moved_back == ("api-2",)


def test_all_full_changes_nothing(spill_policy: Policy) -> None:
    everything = {"qwen-a", "qwen-b", "api-1", "api-2"}
    decision = decide(spill_policy, Features("chat", "acme", 100), Live(full=frozenset(everything)))
    assert decision.candidates == ("qwen-a", "qwen-b", "api-1", "api-2")
    assert decision.spilled_from is None
    assert decision.moved_back == ()


def test_residency_bound_traffic_still_goes_to_full_upstreams_and_nothing_is_added(spill_policy: Policy) -> None:
    personal = order_when_full(spill_policy, {"qwen-a", "qwen-b"}, data_class="personal")
    assert personal == ("qwen-a", "qwen-b")  # api-1, api-2 stay excluded: capacity never widens
    assert order_when_full(spill_policy, {"qwen-a"}, data_class="personal") == ("qwen-b", "qwen-a")


def test_a_full_upstream_is_never_an_exclusion(spill_policy: Policy) -> None:
    decision = decide(spill_policy, Features("chat", "acme", 100), Live(full=frozenset({"qwen-a"})))
    assert decision.excluded == ()


def test_refusals_are_the_same_with_and_without_full_upstreams(spill_policy: Policy) -> None:
    for full in (frozenset(), frozenset({"qwen-a", "api-1"})):
        with pytest.raises(NoCandidate) as caught:
            decide(spill_policy, Features("pinned", "acme", 100, data_class="personal"),
                   Live(open_circuits=frozenset({"qwen-a"}), full=full))
        assert caught.value.code == "residency_unavailable"


def test_a_rules_preference_is_moved_behind_too_when_full(spill_policy: Policy) -> None:
    assert order_when_full(spill_policy, set(), "pinned", headers={"x-b": "1"}) == ("api-1", "qwen-a")
    assert order_when_full(spill_policy, {"api-1"}, "pinned", headers={"x-b": "1"}) == ("qwen-a", "api-1")
