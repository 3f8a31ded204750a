"""The spend, audit verify and keys commands: their parsers and what they run."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path

from gateway.routing.policy.model import KEY_PREFIX, hash_key
from gateway.tools.cli.args import Commands, key_file


def add_spend(commands: Commands) -> None:
    """The spend command and its options."""
    spend = commands.add_parser("spend", help="spend, budget left and savings, from a running gateway")
    spend.add_argument("--url", default="http://127.0.0.1:8080", help="the gateway (default: %(default)s)")
    spend.add_argument("--tenant", help="one tenant (default: all)")
    spend.add_argument("--window", default="day", choices=["day", "month"])
    spend.add_argument("--json", action="store_true", help="print the JSON as the gateway sent it")
    spend.add_argument("--admin-key-file", metavar="PATH",
                       help="read the admin key from this file (default: $SWITCHYARD_ADMIN_KEY)")
    spend.set_defaults(run=_spend)


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


def add_audit(commands: Commands) -> None:
    """The audit command and its verify action."""
    audit = commands.add_parser("audit", help="audit trail tools").add_subparsers(required=True, metavar="ACTION")
    verify = audit.add_parser("verify", help="check that no audit record was removed or edited")
    verify.add_argument("files", nargs="+", metavar="FILE", help="audit files, oldest first")
    verify.add_argument("--key-file", metavar="PATH", type=key_file,
                        default=os.environ.get("SWITCHYARD_AUDIT_KEY_FILE"),
                        help="the audit key the gateway sealed with (default: $SWITCHYARD_AUDIT_KEY_FILE, else "
                             "$SWITCHYARD_AUDIT_KEY; without one, only an unkeyed trail verifies)")
    verify.add_argument("--stream", action="store_true",
                        help="lines kept by a log collector from --audit stdout: no anchor lines, chains may begin "
                             "mid-way")
    verify.set_defaults(run=_verify)


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


def add_keys(commands: Commands) -> None:
    """The keys command and its new and hash actions."""
    keys = commands.add_parser("keys", help="gateway keys").add_subparsers(required=True, metavar="ACTION")
    new = keys.add_parser("new", help="mint a key for a tenant; prints the key once and the hash to store")
    new.add_argument("--tenant", required=True)
    new.set_defaults(run=_new_key)
    keys.add_parser("hash", help="read a key (tenant or admin) from stdin and print the hash to store for it",
                    ).set_defaults(run=_hash_key)


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
