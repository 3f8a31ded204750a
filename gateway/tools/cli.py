"""The `switchyard` command: serve, demo, policy check/explain/test, keys, spend, audit verify."""

from __future__ import annotations

import argparse
import getpass
import importlib.metadata
import json
import os
import secrets
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from gateway.errors import PolicyError
from gateway.routing.policy.checks import notes
from gateway.routing.policy.loader import load_policy
from gateway.routing.policy.model import KEY_PREFIX, Policy, hash_key
from gateway.serving.app import DEFAULT_MAX_BODY, Settings
from gateway.tools.explain import ENDPOINTS
from gateway.upstreams.catalog import LitellmCatalog


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = parser().parse_args(argv)
    status: int = args.run(args)
    return status


def parser() -> argparse.ArgumentParser:
    """Every subcommand and its options."""
    root = argparse.ArgumentParser(prog="switchyard", description="An OpenAI-compatible gateway routed by policy.")
    root.add_argument("--version", action="version", version=f"switchyard {version()}")
    commands = root.add_subparsers(required=True, metavar="COMMAND")
    serve = commands.add_parser("serve", help="serve the gateway")
    serve.add_argument("--policy", default="policies", help="policy file or folder (default: policies/)")
    _listen_options(serve)
    serve.add_argument("--workers", type=int, default=1, help="worker processes, one per core (default: 1)")
    serve.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY, help="request body limit")
    redis = serve.add_mutually_exclusive_group()
    redis.add_argument("--redis", default=os.environ.get("SWITCHYARD_REDIS_URL"), metavar="URL", type=_redis_url,
                       help="share budgets and limits through Redis (default: $SWITCHYARD_REDIS_URL, else in memory); "
                            "a password in it shows in the process list: prefer the variable or --redis-file")
    redis.add_argument("--redis-file", default=os.environ.get("SWITCHYARD_REDIS_FILE"), metavar="PATH",
                       type=_redis_file, dest="redis_from_file",
                       help="read the Redis URL from the first line of this file (default: $SWITCHYARD_REDIS_FILE)")
    serve.add_argument("--audit", action="append", default=[], metavar="stdout|PATH",
                       help="write an audit record per request to stdout or a rotating file ({pid} in PATH is "
                            "replaced by the worker's process id); repeatable")
    serve.add_argument("--audit-key-file", default=os.environ.get("SWITCHYARD_AUDIT_KEY_FILE"), metavar="PATH",
                       type=_key_file, help="seal the audit trail with HMAC under the key in this file (default: "
                                            "$SWITCHYARD_AUDIT_KEY_FILE, else $SWITCHYARD_AUDIT_KEY)")
    serve.add_argument("--reload-interval-s", type=float, default=2.0,
                       help="how often to look for policy changes; 0 turns watching off (SIGHUP still reloads)")
    serve.add_argument("--drain-s", type=int, default=30, help="on SIGTERM, how long in-flight requests may run")
    serve.add_argument("--metrics-port", type=int, metavar="PORT", default=_env_int("SWITCHYARD_METRICS_PORT"),
                       help="serve /metrics on this port only, not the main one ($SWITCHYARD_METRICS_PORT)")
    serve.add_argument("--access-log", action="store_true", default=bool(os.environ.get("SWITCHYARD_ACCESS_LOG")),
                       help="log a JSON line per request, as uvicorn words it ($SWITCHYARD_ACCESS_LOG)")
    serve.add_argument("--metrics-host", default=os.environ.get("SWITCHYARD_METRICS_HOST"), metavar="HOST",
                       help="the address --metrics-port listens on (default: --host; $SWITCHYARD_METRICS_HOST)")
    _socket_options(serve)
    serve.set_defaults(run=_serve)
    demo = commands.add_parser("demo", help="the gateway with two local stand-in upstreams, to try it out")
    _listen_options(demo)
    demo.add_argument("--upstream-ports", type=_port_pair, default=(0, 0), metavar="SELF,PROPRIETARY",
                      help="ports of the two stand-in upstreams on 127.0.0.1 (default: free ones)")
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
    explain.add_argument("--endpoint", default="chat", choices=ENDPOINTS,
                         help="the endpoint the request is for (default: chat)")
    explain.add_argument("--header", action="append", default=[], metavar="NAME:VALUE")
    explain.add_argument("--down", action="append", default=[], metavar="UPSTREAM", help="treat as unavailable")
    explain.add_argument("--ttft", action="append", default=[], metavar="UPSTREAM=MS",
                         help="assume this live p95 time to first token")
    explain.add_argument("--load", action="append", default=[], metavar="UPSTREAM=full|open|WAITING",
                         help="treat an upstream's capacity as full, open, or its queue as WAITING long")
    explain.set_defaults(run=_explain)
    test = policy_actions.add_parser("test", help="run the cases in PATH/tests/*.yaml")
    test.add_argument("path")
    test.set_defaults(run=_test)
    spend = commands.add_parser("spend", help="spend, budget left and savings, from a running gateway")
    spend.add_argument("--url", default="http://127.0.0.1:8080", help="the gateway (default: %(default)s)")
    spend.add_argument("--tenant", help="one tenant (default: all)")
    spend.add_argument("--window", default="day", choices=["day", "month"])
    spend.add_argument("--json", action="store_true", help="print the JSON as the gateway sent it")
    spend.add_argument("--admin-key-file", metavar="PATH",
                       help="read the admin key from this file (default: $SWITCHYARD_ADMIN_KEY)")
    spend.set_defaults(run=_spend)
    audit = commands.add_parser("audit", help="audit trail tools").add_subparsers(required=True, metavar="ACTION")
    verify = audit.add_parser("verify", help="check that no audit record was removed or edited")
    verify.add_argument("files", nargs="+", metavar="FILE", help="audit files, oldest first")
    verify.add_argument("--key-file", metavar="PATH", type=_key_file,
                        default=os.environ.get("SWITCHYARD_AUDIT_KEY_FILE"),
                        help="the audit key the gateway sealed with (default: $SWITCHYARD_AUDIT_KEY_FILE, else "
                             "$SWITCHYARD_AUDIT_KEY; without one, only an unkeyed trail verifies)")
    verify.add_argument("--stream", action="store_true",
                        help="lines kept by a log collector from --audit stdout: no anchor lines, chains may begin "
                             "mid-way")
    verify.set_defaults(run=_verify)
    keys = commands.add_parser("keys", help="gateway keys").add_subparsers(required=True, metavar="ACTION")
    new = keys.add_parser("new", help="mint a key for a tenant; prints the key once and the hash to store")
    new.add_argument("--tenant", required=True)
    new.set_defaults(run=_new_key)
    keys.add_parser("hash", help="read a key (tenant or admin) from stdin and print the hash to store for it",
                    ).set_defaults(run=_hash_key)
    return root


def version() -> str:
    """The installed package's version, or 'unknown' when run from a checkout that was never installed."""
    try:
        return importlib.metadata.version("switchyard")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _port_pair(value: str) -> tuple[int, int]:
    """Two TCP ports written 'A,B'."""
    try:
        first, second = (int(part) for part in value.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{value}' is not two ports written A,B") from None
    if not all(0 <= port < 65536 for port in (first, second)):
        raise argparse.ArgumentTypeError(f"'{value}': a port is between 0 and 65535")
    return first, second


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


SOCKET_OPTIONS = (  # flag, SocketLimits field, type, help
    ("--header-timeout-s", "header_timeout_s", float, "a request's headers must be in this long after its first byte"),
    ("--body-timeout-s", "body_timeout_s", float, "a request's body must be in this long after its headers"),
    ("--keepalive-s", "keepalive_s", float, "close a connection with no request begun after this long"),
    ("--max-connections", "max_connections", int, "open client connections per process (0: half the open-file "
                                                  "limit)"),
    ("--max-header-bytes", "max_header_bytes", int, "the request line and headers, in bytes (431 past it)"),
    ("--max-headers", "max_headers", int, "headers per request (431 past it)"),
)


def _socket_options(command: argparse.ArgumentParser) -> None:
    """The client-connection limits, each defaulting to $SWITCHYARD_<NAME> and else to SocketLimits'."""
    from gateway.serving.connections import SocketLimits

    defaults = SocketLimits()
    for flag, name, kind, text in SOCKET_OPTIONS:
        variable = f"SWITCHYARD_{name.upper()}"
        default = os.environ.get(variable, str(getattr(defaults, name)))  # argparse parses a str default too
        command.add_argument(flag, dest=name, type=_positive(kind), default=default, metavar="N",
                             help=f"{text} (default: ${variable}, else %(default)s)")


def _positive(kind: type[float] | type[int]) -> Callable[[str], float]:
    def parse(value: str) -> float:
        try:
            number = kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
        if number < 0 or (number == 0 and kind is float):
            raise argparse.ArgumentTypeError(f"{value!r} is not a positive number")
        return number
    return parse


def _key_file(path: str) -> str:
    """A readable audit key file, long enough to trust."""
    from gateway.operations.audit import read_key

    try:
        read_key(path)
    except (OSError, ValueError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return path


def _redis_file(path: str) -> str:
    """The Redis URL on the first line of the file at path, checked as --redis checks one."""
    try:
        url = Path(path).read_text(encoding="utf-8").strip().splitlines()[0:1]
    except (OSError, UnicodeDecodeError) as exc:
        raise argparse.ArgumentTypeError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if not url:
        raise argparse.ArgumentTypeError(f"{path} is empty: it should hold a Redis URL")
    try:
        return _redis_url(url[0].strip())
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(f"{path}: {exc}") from None


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value else None


def _listen_options(command: argparse.ArgumentParser) -> None:
    command.add_argument("--host", default="127.0.0.1")
    command.add_argument("--port", type=int, default=8080)
    command.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


def _serve(args: argparse.Namespace) -> int:
    from gateway.serving.connections import SocketLimits
    from gateway.serving.server import ServeOptions, serve

    if not os.path.exists(args.policy):
        print(_no_policy(args.policy), file=sys.stderr)
        return 1
    settings = Settings(policy=args.policy, max_body_bytes=args.max_body_bytes,
                        reload_interval_s=args.reload_interval_s,
                        redis_url=args.redis_from_file or args.redis or None,
                        admin_key=os.environ.get("SWITCHYARD_ADMIN_KEY") or None, audit=tuple(args.audit),
                        audit_key_file=args.audit_key_file, metrics_port=args.metrics_port)
    limits = SocketLimits(**{name: getattr(args, name) for _, name, _, _ in SOCKET_OPTIONS})
    try:
        serve(settings, ServeOptions(args.host, args.port, args.workers, args.drain_s, args.log_level, limits,
                                     args.metrics_host, args.access_log))
    except PolicyError as exc:
        _print_problems(args.policy, exc)
        return 1
    except ValueError as exc:  # a metrics folder it may not use
        print(f"switchyard serve: {exc}", file=sys.stderr)
        return 1
    return 0


def _no_policy(path: str) -> str:
    """Where serve looked for a policy that is not there, and what to do about it."""
    where = Path(path).absolute()
    if path == "policies":
        return (f"switchyard serve: no policy at {where}: without --policy it reads policies/ in the current folder "
                f"({Path.cwd()}); run it from the folder that holds policies/, or pass --policy FILE_OR_FOLDER")
    return f"switchyard serve: no policy at {where} (--policy {path}): pass an existing file or folder"


def _demo(args: argparse.Namespace) -> int:
    from gateway.tools.demo import CannotListen, run_demo

    try:
        run_demo(args.host, args.port, args.log_level, args.upstream_ports)
    except CannotListen as exc:
        print(f"switchyard demo: {exc}", file=sys.stderr)
        return 1
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
    for note in notes(doc):
        print(f"note: {note}")
    return 0


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


def _spend(args: argparse.Namespace) -> int:
    import httpx

    key = _admin_key(args.admin_key_file)
    if not key:
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


def _admin_key(path: str | None) -> str | None:
    """The admin key from the file at path, else from $SWITCHYARD_ADMIN_KEY; None after saying what is missing."""
    if path is None:
        key = os.environ.get("SWITCHYARD_ADMIN_KEY")
        if not key:
            print("set SWITCHYARD_ADMIN_KEY to an admin key, or pass --admin-key-file PATH", file=sys.stderr)
        return key or None
    try:
        key = Path(path).read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        print(f"--admin-key-file {path}: cannot read it: {exc}", file=sys.stderr)
        return None
    if not key:
        print(f"--admin-key-file {path}: the file is empty", file=sys.stderr)
    return key or None


def _verify(args: argparse.Namespace) -> int:
    from gateway.operations.audit import Seal, read_key
    from gateway.operations.audit_verify import verify

    def files() -> Iterator[tuple[str, Iterator[bytes]]]:
        for name in args.files:
            with open(name, "rb") as file:
                yield name, iter(file)

    try:
        seal = Seal(read_key(args.key_file))
        breaks = list(verify(files(), seal, stream=args.stream))
    except (OSError, ValueError) as exc:
        print(exc, file=sys.stderr)
        return 1
    for problem in breaks:
        print(problem)
    keyed = "keyed" if seal.key is not None else "unkeyed"
    print(f"{'ok' if not breaks else 'BROKEN'} ({keyed}): {len(breaks)} break(s) in {', '.join(args.files)}")
    return 0 if not breaks else 1


def _new_key(args: argparse.Namespace) -> int:
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    print(f"key:  {key}")
    print(f"hash: {hash_key(key)}")
    print(f"\nGive the key to {args.tenant} (it is shown only now); add the hash to the policy:\n")
    print(f"tenants:\n  {args.tenant}:\n    keys: [\"{hash_key(key)}\"]")
    return 0


def _hash_key(args: argparse.Namespace) -> int:
    """Print the stored form of a key read from stdin (without echo on a terminal); the key itself never."""
    key = getpass.getpass("key (not echoed): ") if sys.stdin.isatty() else sys.stdin.readline()
    key = key.strip()
    if not key:
        print("switchyard keys hash: no key on stdin (e.g. `switchyard keys hash < admin.key`)", file=sys.stderr)
        return 1
    print(hash_key(key))
    print("store it in admin.keys (an admin key) or tenants.NAME.keys (a tenant's key)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
