"""gateway.routing.policy.checks: every problem of a policy in one run, shape and references together, at its place."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.errors import PolicyError
from gateway.routing.policy.checks import notes
from gateway.routing.policy.loader import load_policy
from tests.conftest import KEY, key_hash

COST = {"input_per_mtok": 1.0, "output_per_mtok": 1.0}


def upstream(**extra: Any) -> dict[str, Any]:
    return {"base_url": "http://upstream:8000/v1", "model": "m", "region": "eu-west", "cost": COST, **extra}


def document(**sections: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"version": 1, "upstreams": {"a": upstream(), "b": upstream()},
                           "models": {"chat": {"candidates": ["a", "b"]}},
                           "tenants": {"acme": {"keys": [key_hash(KEY)]}}}
    doc.update(sections)
    return doc


def problems_of(path: Path) -> list[str]:
    with pytest.raises(PolicyError) as caught:
        load_policy(path, {})
    return caught.value.problems


def places(path: Path) -> list[str]:
    """The problems of the one-file policy at path, without the file name."""
    return [p.removeprefix(f"{path}: ") for p in problems_of(path)]


def write(folder: Path, name: str, doc: dict[str, Any]) -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_shape_and_reference_problems_come_in_one_run_with_their_files(tmp_path: Path) -> None:
    main = document(models={"chat": {"candidates": ["a", "missing"], "objective": "cheapest"},
                            "batch": {"candidates": ["a", "gone"]}})
    write(tmp_path, "10-main.yaml", main)
    write(tmp_path, "20-tenants.yaml", {"version": 1, "tenants": {"beta": {"keys": [key_hash("sk-b")],
                                                                            "models": ["chat", "nope"],
                                                                            "regoins": ["x"]},
                                                                   "gamma": {"keys": [key_hash("sk-g")],
                                                                             "models": ["btach"]}}})
    found = problems_of(tmp_path)
    main_file, tenant_file = tmp_path / "10-main.yaml", tmp_path / "20-tenants.yaml"
    assert found == [
        f"{main_file}: models.chat.objective: Input should be 'cost', 'latency' or 'priority'",
        f"{tenant_file}: tenants.beta.regoins: unknown key 'regoins' (did you mean 'regions'?)",
        f"{main_file}: models.chat.candidates[1]: upstream 'missing' is not defined",  # beside its shape error
        f"{main_file}: models.batch.candidates[1]: upstream 'gone' is not defined",
        f"{tenant_file}: tenants.beta.models[1]: model 'nope' is not defined",
        f"{tenant_file}: tenants.gamma.models[0]: model 'btach' is not defined (did you mean 'batch'?)",
    ]


def test_a_key_that_fails_its_shape_is_reported_once(tmp_path: Path) -> None:
    """A bad cost is one problem, not also 'no price'; a bad key is one problem, not also a missing tenant."""
    doc = document(upstreams={"a": upstream(cost={"input_per_mtok": 1.0}), "b": upstream()},
                   tenants={"acme": {"keys": ["sk-raw"]}}, rules=[{"name": "r", "match": {"tenant": "acme"}}])
    assert [p.split(":", 1)[0] for p in places(write(tmp_path, "p.yaml", doc))] == ["upstreams.a.cost",
                                                                                    "tenants.acme.keys"]


def test_an_entry_that_fails_its_shape_still_counts_as_defined(tmp_path: Path) -> None:
    """A typo inside upstream 'a' is one problem, not one more for every place that names 'a'."""
    doc = document(upstreams={"a": upstream(hostng="self"), "b": upstream()},
                   rules=[{"name": "r", "prefer": ["a"], "exclude": ["c"]}])
    assert problems_of(write(tmp_path, "p.yaml", doc)) == [
        f"{tmp_path / 'p.yaml'}: upstreams.a.hostng: unknown key 'hostng' (did you mean 'hosting'?)",
        f"{tmp_path / 'p.yaml'}: rules[0].exclude[0]: upstream 'c' is not defined"]


def test_a_failing_rule_keeps_the_places_of_the_rules_after_it(tmp_path: Path) -> None:
    doc = document(rules=[{"name": "bad", "objective": "fastest"}, {"name": "good", "prefer": ["z"]},
                          {"name": "good"}])
    found = places(write(tmp_path, "p.yaml", doc))
    assert found == ["rules[0].objective: Input should be 'cost', 'latency' or 'priority'",
                     "rules[1].prefer[0]: upstream 'z' is not defined",
                     "rules[2].name: rule name 'good' is used twice"]


def test_a_failing_section_falls_back_and_the_rest_is_still_checked(tmp_path: Path) -> None:
    doc = document(resilience={"attempts_per_upstream": 0}, baseline="nowhere",
                   classify={"detectors": [{"detect": ["ssn"], "class": "secret"}]})
    found = places(write(tmp_path, "p.yaml", doc))
    assert found[0].startswith("resilience.attempts_per_upstream: Input should be greater than or equal to 1")
    assert found[1:] == ["baseline: upstream 'nowhere' is not defined",
                         "classify.detectors[0].class: data class 'secret' is not defined in data_classes",
                         "classify.detectors[0].detect[0]: unknown detector 'ssn' "
                         "(built in: credit_card, email, iban, national_id, phone)"]


def test_a_missing_required_section_is_reported_without_reference_checks(tmp_path: Path) -> None:
    doc = document()
    del doc["tenants"]
    doc["models"]["chat"]["candidates"] = ["zz"]
    found = places(write(tmp_path, "p.yaml", doc))
    assert found == ["tenants: required key is missing"]


def test_price_problems_join_the_others(tmp_path: Path) -> None:
    doc = document(upstreams={"a": {"base_url": "http://u/v1", "model": "m"}, "b": upstream(regoin="x")})
    found = places(write(tmp_path, "p.yaml", doc))
    assert found[0] == "upstreams.b.regoin: unknown key 'regoin' (did you mean 'region'?)"
    assert found[1].startswith("upstreams.a.cost: no price in the policy")
    assert len(found) == 2


def test_notes_name_only_upstreams_that_list_no_capabilities(tmp_path: Path) -> None:
    doc = document(upstreams={"a": upstream(), "b": upstream(capabilities=[]), "c": upstream(capabilities=["tools"])})
    policy = load_policy(write(tmp_path, "p.yaml", doc), {})
    found = notes(policy.doc)
    assert len(found) == 1
    assert found[0].startswith("upstreams.a: lists no capabilities")


def test_unset_variables_come_with_the_other_problems_and_no_echo_at_their_place(tmp_path: Path) -> None:
    doc = document(upstreams={"a": upstream(base_url="${A_URL}"), "b": upstream()},
                   models={"chat": {"candidates": ["a", "c"]}})
    assert places(write(tmp_path, "p.yaml", doc)) == [
        "upstreams.a.base_url: environment variable A_URL is not set (write ${A_URL:-} to allow it unset)",
        "models.chat.candidates[1]: upstream 'c' is not defined"]
