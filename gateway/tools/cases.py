"""Policy test cases (`PATH/tests/*.yaml`): a request, a tenant, upstream health, and what must be decided."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError

from gateway.routing.capacity.state import full_from_loads
from gateway.routing.policy.checks import describe_validation_error
from gateway.routing.policy.decide import Live
from gateway.routing.policy.model import Policy
from gateway.routing.policy.schema import Strict
from gateway.tools.explain import Endpoint, Outcome, evaluate


class Health(Strict):
    """Upstream state a case assumes."""

    down: tuple[str, ...] = ()
    ttft_p95_ms: dict[str, float] = Field(default_factory=dict)


class Expect(Strict):
    """What the decision must be; give the fields that matter."""

    upstreams: tuple[str, ...] | None = None
    first: str | None = None
    error: str | None = None
    data_class: str | None = None
    rule: str | None = None  # `rule: null` asserts that no rule matched


class Case(Strict):
    """One request and its expected decision."""

    name: str
    tenant: str
    request: dict[str, Any]
    endpoint: Endpoint = "chat"
    headers: dict[str, str] = Field(default_factory=dict)
    health: Health = Health()
    load: dict[str, str | float] = Field(default_factory=dict)
    expect: Expect


@dataclass(frozen=True)
class Result:
    """A case's verdict; `error` when the case itself could not be read, so it tested nothing."""

    file: str
    name: str
    problems: tuple[str, ...]
    line: int = 0
    error: bool = False

    @property
    def passed(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class Entry:
    """One item of a case file: the case, or the problems that kept it from being read."""

    file: str
    line: int
    name: str
    case: Case | None = None
    problems: tuple[str, ...] = ()


def case_files(policy_path: Path) -> list[Path]:
    """The case files of a policy: `tests/*.yaml` beside the policy file, or inside the policy folder."""
    folder = policy_path if policy_path.is_dir() else policy_path.parent
    return sorted([*folder.joinpath("tests").glob("*.yaml"), *folder.joinpath("tests").glob("*.yml")])


def load_cases(file: Path) -> list[Entry]:
    """Read one case file, each case on its own; ValueError (FILE:LINE: message) when the file has no cases list."""
    try:
        text = file.read_text(encoding="utf-8")
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{file}: cannot read: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise ValueError(f"{file}{where}: not valid YAML: {getattr(exc, 'problem', None) or exc}") from None
    cases = data.get("cases") if isinstance(data, dict) else None
    if not isinstance(cases, list) or not cases or set(data) != {"cases"}:
        raise ValueError(f"{file}:1: a case file is a mapping with one key, `cases`: a non-empty list of cases")
    nodes = _child(root, "cases")
    assert isinstance(nodes, yaml.SequenceNode)
    return [_entry(str(file), item, node) for item, node in zip(cases, nodes.value, strict=True)]


def _entry(file: str, item: object, node: yaml.Node) -> Entry:
    """One case, validated on its own; a problem names the line of the key it is about."""
    name = str(item.get("name", "(unnamed case)")) if isinstance(item, dict) else "(not a case)"
    line = node.start_mark.line + 1
    try:
        return Entry(file, line, name, Case.model_validate(item))
    except ValidationError as exc:
        problems = [f"line {_line(node, tuple(e['loc']))}: {d}"
                    for e, d in zip(exc.errors(include_url=False), describe_validation_error(exc), strict=True)]
        return Entry(file, line, name, problems=tuple(problems))


def _child(node: yaml.Node | None, key: object) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        return next((v for k, v in node.value if k.value == str(key)), None)
    if isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
        found: yaml.Node = node.value[key]
        return found
    return None


def _line(node: yaml.Node, loc: Sequence[object]) -> int:
    """The line of the deepest node along loc that exists (a missing key: the case's own line)."""
    for step in loc:
        child = _child(node, step)
        if child is None:
            break
        node = child
    return int(node.start_mark.line) + 1


def run_entry(policy: Policy, entry: Entry) -> Result:
    """The verdict on one entry of a case file: an error if it could not be read, else the case's."""
    if entry.case is None:
        return Result(entry.file, entry.name, entry.problems, entry.line, error=True)
    result = run_case(policy, entry.case, entry.file)
    return Result(result.file, result.name, result.problems, entry.line, error=result.error)


def run_case(policy: Policy, case: Case, file: str) -> Result:
    """Decide the case's request and compare with what it expects."""
    unknown = _unknown_names(policy, case)
    if unknown:
        return Result(file, case.name, tuple(unknown), error=True)
    try:
        full = full_from_loads(policy, case.load)
    except ValueError as exc:
        return Result(file, case.name, (str(exc),), error=True)
    live = Live(open_circuits=frozenset(case.health.down), ttft_p95_ms=case.health.ttft_p95_ms, full=full)
    outcome = evaluate(policy, case.tenant, case.request, case.headers, live, case.endpoint)
    return Result(file, case.name, tuple(_compare(case.expect, outcome)))


def _unknown_names(policy: Policy, case: Case) -> list[str]:
    """Names a case uses that the policy does not have: a typo would otherwise make the case test nothing."""
    problems = [] if case.tenant in policy.doc.tenants else [f"tenant '{case.tenant}' is not in the policy"]
    named = [*case.health.down, *case.health.ttft_p95_ms, *(case.expect.upstreams or ()),
             *([case.expect.first] if case.expect.first else [])]
    problems += [f"upstream '{name}' is not in the policy" for name in named if name not in policy.doc.upstreams]
    if case.expect.data_class is not None and case.expect.data_class not in policy.doc.data_classes:
        problems.append(f"data class '{case.expect.data_class}' is not in the policy")
    if case.expect.rule is not None and case.expect.rule not in {r.name for r in policy.doc.rules}:
        problems.append(f"rule '{case.expect.rule}' is not in the policy")
    return problems


def _compare(expect: Expect, outcome: Outcome) -> list[str]:
    problems = []
    got_class = outcome.features.data_class if outcome.features else None
    if expect.data_class is not None and expect.data_class != got_class:
        problems.append(f"expected data class {expect.data_class}, got {got_class}")
    got_error = outcome.error.code if outcome.error is not None else None
    if expect.error != got_error:
        wanted = f"error {expect.error}" if expect.error else "a decision"
        got = f"error {got_error}: {outcome.error.message}" if outcome.error else "a decision"
        return [*problems, f"expected {wanted}, got {got}"]
    order = outcome.decision.candidates if outcome.decision else ()
    if expect.upstreams is not None and tuple(expect.upstreams) != order:
        problems.append(f"expected upstreams {list(expect.upstreams)}, got {list(order)}")
    if expect.first is not None and (order[:1] != (expect.first,)):
        problems.append(f"expected first {expect.first}, got {order[0] if order else None}")
    got_rule = outcome.decision.rule if outcome.decision else None
    if "rule" in expect.model_fields_set and expect.rule != got_rule:
        problems.append(f"expected rule {expect.rule}, got {got_rule}")
    return problems
