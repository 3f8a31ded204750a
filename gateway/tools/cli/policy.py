"""The policy check, explain and test commands: their parsers and what they run."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gateway.errors import PolicyError
from gateway.routing.policy.checks import notes
from gateway.routing.policy.loader import load_policy
from gateway.routing.policy.model import Policy, Price
from gateway.tools.cli.args import Commands
from gateway.tools.explain import ENDPOINTS
from gateway.upstreams.catalog import LitellmCatalog


def add_policy(commands: Commands) -> None:
    """The policy command and its actions."""
    policy = commands.add_parser("policy", help="work with policy files")
    actions = policy.add_subparsers(required=True, metavar="ACTION")
    add_check(actions)
    add_explain(actions)
    add_test(actions)


def _load(path: str) -> Policy | None:
    """The policy at path, or None after printing its problems."""
    try:
        return load_policy(path, catalog=LitellmCatalog())
    except PolicyError as exc:
        print_problems(path, exc)
        return None


def print_problems(path: str, exc: PolicyError) -> None:
    """Each problem that kept the policy at path from loading, then a count, on stderr."""
    for problem in exc.problems:
        print(problem, file=sys.stderr)
    print(f"{path}: {len(exc.problems)} problem(s); the policy was not loaded", file=sys.stderr)


def add_check(actions: Commands) -> None:
    """The policy check action."""
    check = actions.add_parser("check", help="load a policy and report every problem")
    check.add_argument("path")
    check.set_defaults(run=_check)


def _check(args: argparse.Namespace) -> int:
    policy = _load(args.path)
    if policy is None:
        return 1
    doc = policy.doc
    print(f"ok: {args.path} (policy {policy.hash}): {len(doc.upstreams)} upstreams, {len(doc.models)} routes, "
          f"{len(doc.tenants)} tenants, {len(doc.rules)} rules")
    if doc.data_classes:
        unreadable = doc.classify.unreadable or f"{list(doc.data_classes)[-1]}, the most sensitive class (default)"
        print(f"  classify.unreadable: images, audio, files and token ids raise a request to {unreadable}")
    for name, upstream in doc.upstreams.items():
        print(f"  upstream {name} ({upstream.kind}): price from the {policy.price_source[name]}: "
              f"{_prices(policy.price[name])} per Mtok")
    for note in notes(doc):
        print(f"note: {note}")
    return 0


def _prices(price: Price) -> str:
    """An upstream's prices per Mtok, its cache prices when they are not the input price."""
    per_in, per_out, per_read, per_write, per_write_1h = price
    shown = f"${per_in * 1e6:.4f} in, ${per_out * 1e6:.4f} out"
    if per_read != per_in or per_write != per_in:
        shown += f", ${per_read * 1e6:.4f} cache read, ${per_write * 1e6:.4f} cache write"
    if per_write_1h != per_write:
        shown += f", ${per_write_1h * 1e6:.4f} one-hour cache write"
    return shown


def add_explain(actions: Commands) -> None:
    """The policy explain action and its options."""
    explain = actions.add_parser("explain", help="show how a request would be decided, sending nothing")
    explain.add_argument("path")
    explain.add_argument("--key", required=True, help="the tenant's gateway key")
    explain.add_argument("--request", required=True, help="a JSON file with the request body")
    explain.add_argument("--endpoint", default="chat", choices=ENDPOINTS,
                         help="the endpoint the request is for (default: chat)")
    explain.add_argument("--header", action="append", default=[], metavar="NAME:VALUE")
    explain.add_argument("--down", action="append", default=[], metavar="UPSTREAM", help="treat as unavailable")
    explain.add_argument("--ttft", action="append", default=[], metavar="UPSTREAM=MS",
                         help="assume this live p95 time to first token")
    explain.add_argument("--load", action="append", default=[], metavar="UPSTREAM=full|open|WAITING",
                         help="treat an upstream's capacity as full, open, or its queue as WAITING long")
    explain.set_defaults(run=_explain)


def _explain(args: argparse.Namespace) -> int:
    from gateway.routing.capacity.state import full_from_loads
    from gateway.routing.policy.decide import Live
    from gateway.tools.explain import evaluate, trace

    policy = _load(args.path)
    if policy is None:
        return 1
    try:
        body = json.loads(Path(args.request).read_text())
    except (OSError, ValueError) as exc:
        print(f"{args.request}: {exc}", file=sys.stderr)
        return 1
    found = policy.tenant(args.key)
    if found is None:
        print("1. who: unknown key -> 401 invalid_api_key", file=sys.stderr)
        return 2
    try:
        headers = _pairs(args.header, ":")
        ttft = {name: float(ms) for name, ms in _pairs(args.ttft, "=").items()}
        full = full_from_loads(policy, _pairs(args.load, "="))
    except ValueError as exc:
        print(f"switchyard policy explain: {exc}", file=sys.stderr)
        return 1
    outcome = evaluate(policy, found[0], body, headers, Live(frozenset(args.down), ttft, full), args.endpoint)
    print("\n".join(trace(policy, outcome)))
    return 0 if outcome.error is None else 2


def _pairs(items: list[str], separator: str) -> dict[str, str]:
    """NAME{separator}VALUE options as a dict; ValueError naming the first malformed one."""
    pairs = {}
    for item in items:
        name, found, value = item.partition(separator)
        if not found or not name.strip():
            raise ValueError(f"'{item}' is not NAME{separator}VALUE")
        pairs[name.strip()] = value.strip()
    return pairs


def add_test(actions: Commands) -> None:
    """The policy test action."""
    test = actions.add_parser("test", help="run the cases in PATH/tests/*.yaml")
    test.add_argument("path")
    test.set_defaults(run=_test)


def _test(args: argparse.Namespace) -> int:
    from gateway.tools.cases import Result, case_files, load_cases, run_entry

    policy = _load(args.path)
    if policy is None:
        return 1
    files = case_files(Path(args.path))
    if not files:
        print(f"{args.path}: no test cases (tests/*.yaml) found", file=sys.stderr)
        return 1
    results: list[Result] = []
    for file in files:
        try:
            entries = load_cases(file)
        except ValueError as exc:
            print(f"ERROR {exc}")
            results.append(Result(str(file), "", (str(exc),), error=True))
            continue
        for entry in entries:
            result = run_entry(policy, entry)
            verdict = "ERROR" if result.error else "PASS" if result.passed else "FAIL"
            print(f"{verdict} {file}:{result.line}: {result.name}")
            for problem in result.problems:
                print(f"     {problem}")
            results.append(result)
    errors = sum(r.error for r in results)
    passed = sum(r.passed for r in results)
    print(f"{passed} passed, {len(results) - passed - errors} failed" + (f", {errors} error(s)" if errors else ""))
    return 0 if passed == len(results) else 1
