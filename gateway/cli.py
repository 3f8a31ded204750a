"""The `switchyard` command: serve, demo, policy check, keys new."""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from gateway.app import DEFAULT_MAX_BODY, Settings
from gateway.errors import PolicyError
from gateway.policy.loader import load_policy
from gateway.policy.model import KEY_PREFIX, Policy, hash_key
from gateway.upstreams.catalog import LitellmCatalog


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = parser().parse_args(argv)
    status: int = args.run(args)
    return status


def parser() -> argparse.ArgumentParser:
    """Every subcommand and its options."""
    root = argparse.ArgumentParser(prog="switchyard", description="An OpenAI-compatible gateway routed by policy.")
    commands = root.add_subparsers(required=True, metavar="COMMAND")
    serve = commands.add_parser("serve", help="serve the gateway")
    serve.add_argument("--policy", default="policies", help="policy file or folder (default: policies/)")
    _listen_options(serve)
    serve.add_argument("--workers", type=int, default=1, help="worker processes, one per core (default: 1)")
    serve.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY, help="request body limit")
    serve.add_argument("--redis", default=os.environ.get("SWITCHYARD_REDIS_URL"), metavar="URL", type=_redis_url,
                       help="share budgets and limits through Redis (default: $SWITCHYARD_REDIS_URL, else in memory)")
    serve.add_argument("--audit", action="append", default=[], metavar="stdout|PATH",
                       help="write an audit record per request to stdout or a rotating file ({pid} in PATH is "
                            "replaced by the worker's process id); repeatable")
    serve.add_argument("--reload-interval-s", type=float, default=2.0,
                       help="how often to look for policy changes; 0 turns watching off (SIGHUP still reloads)")
    serve.add_argument("--drain-s", type=int, default=30, help="on SIGTERM, how long in-flight requests may run")
    serve.set_defaults(run=_serve)
    demo = commands.add_parser("demo", help="the gateway with two local stand-in upstreams, to try it out")
    _listen_options(demo)
    demo.set_defaults(run=_demo)
    policy = commands.add_parser("policy", help="work with policy files")
    policy_actions = policy.add_subparsers(required=True, metavar="ACTION")
    check = policy_actions.add_parser("check", help="load a policy and report every problem")
    check.add_argument("path")
    check.set_defaults(run=_check)
    explain = policy_actions.add_parser("explain", help="show how a request would be decided, sending nothing")
    explain.add_argument("path")
    explain.add_argument("--key", required=True, help="the tenant's gateway key")
    explain.add_argument("--request", required=True, help="a JSON file with the request body")
    explain.add_argument("--endpoint", default="chat", choices=["chat", "completions", "embeddings"])
    explain.add_argument("--header", action="append", default=[], metavar="NAME:VALUE")
    explain.add_argument("--down", action="append", default=[], metavar="UPSTREAM", help="treat as unavailable")
    explain.add_argument("--ttft", action="append", default=[], metavar="UPSTREAM=MS",
                         help="assume this live p95 time to first token")
    explain.set_defaults(run=_explain)
    test = policy_actions.add_parser("test", help="run the cases in PATH/tests/*.yaml")
    test.add_argument("path")
    test.set_defaults(run=_test)
    spend = commands.add_parser("spend", help="spend, budget left and savings, from a running gateway")
    spend.add_argument("--url", default="http://127.0.0.1:8080", help="the gateway (default: %(default)s)")
    spend.add_argument("--tenant", help="one tenant (default: all)")
    spend.add_argument("--window", default="day", choices=["day", "month"])
    spend.add_argument("--json", action="store_true", help="print the JSON as the gateway sent it")
    spend.set_defaults(run=_spend)
    audit = commands.add_parser("audit", help="audit trail tools").add_subparsers(required=True, metavar="ACTION")
    verify = audit.add_parser("verify", help="check that no audit record was removed or edited")
    verify.add_argument("files", nargs="+", metavar="FILE", help="audit files, oldest first")
    verify.set_defaults(run=_verify)
    keys = commands.add_parser("keys", help="gateway keys").add_subparsers(required=True, metavar="ACTION")
    new = keys.add_parser("new", help="mint a key for a tenant; prints the key once and the hash to store")
    new.add_argument("--tenant", required=True)
    new.set_defaults(run=_new_key)
    return root


def _redis_url(value: str) -> str:
    """A Redis URL the gateway can use, else a usage error saying why (never echoing a password)."""
    from gateway.state.resp import Address

    try:
        Address.parse(value).tls_context()
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    except OSError as exc:  # ssl.SSLError is one too
        raise argparse.ArgumentTypeError(f"cannot use the TLS files it names: {exc.strerror or exc}") from None
    return value


def _listen_options(command: argparse.ArgumentParser) -> None:
    command.add_argument("--host", default="127.0.0.1")
    command.add_argument("--port", type=int, default=8080)
    command.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


def _serve(args: argparse.Namespace) -> int:
    from gateway.server import ServeOptions, serve

    settings = Settings(policy=args.policy, max_body_bytes=args.max_body_bytes,
                        reload_interval_s=args.reload_interval_s, redis_url=args.redis or None,
                        admin_key=os.environ.get("SWITCHYARD_ADMIN_KEY") or None, audit=tuple(args.audit))
    try:
        serve(settings, ServeOptions(args.host, args.port, args.workers, args.drain_s, args.log_level))
    except PolicyError as exc:
        _print_problems(args.policy, exc)
        return 1
    return 0


def _demo(args: argparse.Namespace) -> int:
    from gateway.demo import run_demo

    run_demo(args.host, args.port, args.log_level)
    return 0


def _load(path: str) -> Policy | None:
    """The policy at path, or None after printing its problems."""
    try:
        return load_policy(path, catalog=LitellmCatalog())
    except PolicyError as exc:
        _print_problems(path, exc)
        return None


def _print_problems(path: str, exc: PolicyError) -> None:
    for problem in exc.problems:
        print(problem, file=sys.stderr)
    print(f"{path}: {len(exc.problems)} problem(s); the policy was not loaded", file=sys.stderr)


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
        per_in, per_out = policy.price[name]
        print(f"  upstream {name} ({upstream.kind}): price from the {policy.price_source[name]}: "
              f"${per_in * 1e6:.4f} in, ${per_out * 1e6:.4f} out per Mtok")
    return 0


def _explain(args: argparse.Namespace) -> int:
    from gateway.explain import evaluate, trace
    from gateway.policy.decide import Live

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
    except ValueError as exc:
        print(f"switchyard policy explain: {exc}", file=sys.stderr)
        return 1
    outcome = evaluate(policy, found[0], body, headers, Live(frozenset(args.down), ttft), args.endpoint)
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


def _test(args: argparse.Namespace) -> int:
    from gateway.cases import case_files, load_cases, run_case

    policy = _load(args.path)
    if policy is None:
        return 1
    files = case_files(Path(args.path))
    if not files:
        print(f"{args.path}: no test cases (tests/*.yaml) found", file=sys.stderr)
        return 1
    passed = failed = 0
    for file in files:
        try:
            cases = load_cases(file)
        except ValueError as exc:
            print(exc, file=sys.stderr)
            failed += 1
            continue
        for case in cases:
            result = run_case(policy, case, str(file))
            print(f"{'PASS' if result.passed else 'FAIL'} {file.name}: {case.name}")
            for problem in result.problems:
                print(f"     {problem}")
            passed, failed = (passed + 1, failed) if result.passed else (passed, failed + 1)
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


def _spend(args: argparse.Namespace) -> int:
    import httpx

    key = os.environ.get("SWITCHYARD_ADMIN_KEY")
    if not key:
        print("set SWITCHYARD_ADMIN_KEY to an admin key", file=sys.stderr)
        return 1
    params = {"window": args.window, **({"tenant": args.tenant} if args.tenant else {})}
    try:
        response = httpx.get(args.url.rstrip("/") + "/admin/spend", params=params,
                             headers={"authorization": f"Bearer {key}"}, timeout=10)
    except httpx.HTTPError as exc:
        print(f"{args.url}: {exc}", file=sys.stderr)
        return 1
    if response.status_code != 200:
        print(f"{response.status_code}: {response.json().get('error', {}).get('message')}", file=sys.stderr)
        return 1
    report = response.json()
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{'tenant':<20} {'period':<11} {'spend $':>12} {'budget $':>10} {'left $':>12} {'savings $':>12}")
    for row in report["tenants"]:
        budget = "-" if row["budget_usd"] is None else f"{row['budget_usd']:.2f}"
        left = "-" if row["remaining_usd"] is None else f"{row['remaining_usd']:.6f}"
        print(f"{row['tenant']:<20} {row['period']:<11} {row['spend_usd']:>12.6f} {budget:>10} {left:>12} "
              f"{row['savings_usd']:>12.6f}")
        for name, up in row["upstreams"].items():
            print(f"  {name:<18} {up['requests']:>8} requests {up['tokens']:>10} tokens ${up['cost_usd']:.6f}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from gateway.audit import verify

    def lines() -> Iterator[bytes]:
        for name in args.files:
            with open(name, "rb") as file:
                yield from file

    try:
        breaks = list(verify(lines()))
    except OSError as exc:
        print(exc, file=sys.stderr)
        return 1
    for problem in breaks:
        print(problem)
    print(f"{'ok' if not breaks else 'BROKEN'}: {len(breaks)} break(s) in {', '.join(args.files)}")
    return 0 if not breaks else 1


def _new_key(args: argparse.Namespace) -> int:
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    print(f"key:  {key}")
    print(f"hash: {hash_key(key)}")
    print(f"\nGive the key to {args.tenant} (it is shown only now); add the hash to the policy:\n")
    print(f"tenants:\n  {args.tenant}:\n    keys: [\"{hash_key(key)}\"]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
