"""The decision with full upstreams: moved behind the rest in order, never excluded, nothing added."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import NoCandidate
from gateway.routing.policy.decide import Features, Live, decide
from gateway.routing.policy.loader import load_policy
from gateway.routing.policy.model import Policy
from tests.conftest import KEY, key_hash

POLICY = f"""\
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
def policy(tmp_path: Path) -> Policy:
    (tmp_path / "p.yaml").write_text(POLICY)
    return load_policy(tmp_path / "p.yaml")


def order(policy: Policy, full: set[str], route: str = "chat", **features: object) -> tuple[str, ...]:
    decision = decide(policy, Features(route, "acme", 100, **features),  # type: ignore[arg-type]
                      Live(full=frozenset(full)))
    return decision.candidates


def test_nothing_full_keeps_the_objectives_order(policy: Policy) -> None:
    assert order(policy, set()) == ("qwen-a", "qwen-b", "api-1", "api-2")


def test_a_full_upstream_moves_behind_every_open_one_keeping_their_order(policy: Policy) -> None:
    assert order(policy, {"qwen-a"}) == ("qwen-b", "api-1", "api-2", "qwen-a")
    assert order(policy, {"qwen-a", "qwen-b"}) == ("api-1", "api-2", "qwen-a", "qwen-b")
    assert order(policy, {"api-1"}) == ("qwen-a", "qwen-b", "api-2", "api-1")


def test_the_decision_names_what_it_moved_and_the_first_choice_it_spilled_from(policy: Policy) -> None:
    decision = decide(policy, Features("chat", "acme", 100), Live(full=frozenset({"qwen-a", "api-2"})))
    assert decision.moved_back == ("qwen-a", "api-2")
    assert decision.spilled_from == "qwen-a"
    later = decide(policy, Features("chat", "acme", 100), Live(full=frozenset({"api-2"})))
    assert later.spilled_from is None
    assert later.moved_back == ("api-2",)


def test_all_full_changes_nothing(policy: Policy) -> None:
    everything = {"qwen-a", "qwen-b", "api-1", "api-2"}
    decision = decide(policy, Features("chat", "acme", 100), Live(full=frozenset(everything)))
    assert decision.candidates == ("qwen-a", "qwen-b", "api-1", "api-2")
    assert decision.spilled_from is None
    assert decision.moved_back == ()


def test_residency_bound_traffic_still_goes_to_full_upstreams_and_nothing_is_added(policy: Policy) -> None:
    personal = order(policy, {"qwen-a", "qwen-b"}, data_class="personal")
    assert personal == ("qwen-a", "qwen-b")  # api-1, api-2 stay excluded: capacity never widens
    assert order(policy, {"qwen-a"}, data_class="personal") == ("qwen-b", "qwen-a")


def test_a_full_upstream_is_never_an_exclusion(policy: Policy) -> None:
    decision = decide(policy, Features("chat", "acme", 100), Live(full=frozenset({"qwen-a"})))
    assert decision.excluded == ()


def test_refusals_are_the_same_with_and_without_full_upstreams(policy: Policy) -> None:
    for full in (frozenset(), frozenset({"qwen-a", "api-1"})):
        with pytest.raises(NoCandidate) as caught:
            decide(policy, Features("pinned", "acme", 100, data_class="personal"),
                   Live(open_circuits=frozenset({"qwen-a"}), full=full))
        assert caught.value.code == "residency_unavailable"


def test_a_rules_preference_is_moved_behind_too_when_full(policy: Policy) -> None:
    assert order(policy, set(), "pinned", headers={"x-b": "1"}) == ("api-1", "qwen-a")
    assert order(policy, {"api-1"}, "pinned", headers={"x-b": "1"}) == ("qwen-a", "api-1")
