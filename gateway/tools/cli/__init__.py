"""The `switchyard` command: serve, demo, policy check/explain/test, keys, spend, audit verify."""

from __future__ import annotations

import argparse
import importlib.metadata
from collections.abc import Sequence

from gateway.tools.cli.admin import add_audit, add_keys, add_spend
from gateway.tools.cli.policy import add_policy
from gateway.tools.cli.serve import add_demo, add_serve


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
    for add in (add_serve, add_demo, add_policy, add_spend, add_audit, add_keys):
        add(commands)
    return root


def version() -> str:
    """The installed package's version, or 'unknown' when run from a checkout that was never installed."""
    try:
        return importlib.metadata.version("switchyard")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
