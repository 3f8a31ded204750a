"""The serve and demo commands: their parsers and what they run."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from gateway.errors import PolicyError
from gateway.serving.settings import DEFAULT_MAX_BODY, DEFAULT_REDIS_TIMEOUT_MS, Settings
from gateway.tools.cli.args import (
    SOCKET_OPTIONS,
    Commands,
    env_int,
    key_file,
    listen_options,
    port_pair,
    positive,
    redis_file,
    redis_url,
    socket_options,
)
from gateway.tools.cli.policy import print_problems


def add_serve(commands: Commands) -> None:
    """The serve command and its options."""
    serve = commands.add_parser("serve", help="serve the gateway")
    serve.add_argument("--policy", default="policies", help="policy file or folder (default: policies/)")
    listen_options(serve)
    serve.add_argument("--workers", type=int, default=1, help="worker processes, one per core (default: 1)")
    serve.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY, help="request body limit")
    redis = serve.add_mutually_exclusive_group()
    redis.add_argument("--redis", default=os.environ.get("SWITCHYARD_REDIS_URL"), metavar="URL", type=redis_url,
                       help="share budgets and limits through Redis (default: $SWITCHYARD_REDIS_URL, else in memory); "
                            "a password in it shows in the process list: prefer the variable or --redis-file")
    redis.add_argument("--redis-file", default=os.environ.get("SWITCHYARD_REDIS_FILE"), metavar="PATH",
                       type=redis_file, dest="redis_from_file",
                       help="read the Redis URL from the first line of this file (default: $SWITCHYARD_REDIS_FILE)")
    serve.add_argument("--redis-timeout-ms", type=positive(float),
                       default=os.environ.get("SWITCHYARD_REDIS_TIMEOUT_MS", str(DEFAULT_REDIS_TIMEOUT_MS)),
                       metavar="MS", help="how long one Redis call may take before it counts as Redis unavailable "
                                          "(default: $SWITCHYARD_REDIS_TIMEOUT_MS, else %(default)s)")
    serve.add_argument("--audit", action="append", default=[], metavar="stdout|PATH",
                       help="write an audit record per request to stdout or a rotating file ({pid} in PATH is "
                            "replaced by the worker's process id); repeatable")
    serve.add_argument("--audit-key-file", default=os.environ.get("SWITCHYARD_AUDIT_KEY_FILE"), metavar="PATH",
                       type=key_file, help="seal the audit trail with HMAC under the key in this file (default: "
                                           "$SWITCHYARD_AUDIT_KEY_FILE, else $SWITCHYARD_AUDIT_KEY)")
    serve.add_argument("--reload-interval-s", type=float, default=2.0,
                       help="how often to look for policy changes; 0 turns watching off (SIGHUP still reloads)")
    serve.add_argument("--drain-s", type=int, default=30, help="on SIGTERM, how long in-flight requests may run")
    serve.add_argument("--metrics-port", type=int, metavar="PORT", default=env_int("SWITCHYARD_METRICS_PORT"),
                       help="serve /metrics on this port only, not the main one ($SWITCHYARD_METRICS_PORT)")
    serve.add_argument("--access-log", action="store_true", default=bool(os.environ.get("SWITCHYARD_ACCESS_LOG")),
                       help="log a JSON line per request, as uvicorn words it ($SWITCHYARD_ACCESS_LOG)")
    serve.add_argument("--metrics-host", default=os.environ.get("SWITCHYARD_METRICS_HOST"), metavar="HOST",
                       help="the address --metrics-port listens on (default: --host; $SWITCHYARD_METRICS_HOST)")
    socket_options(serve)
    serve.set_defaults(run=_serve)


def _serve(args: argparse.Namespace) -> int:
    from gateway.serving.connections import SocketLimits
    from gateway.serving.server import ServeOptions, serve

    if not os.path.exists(args.policy):
        print(_no_policy(args.policy), file=sys.stderr)
        return 1
    settings = Settings(policy=args.policy, max_body_bytes=args.max_body_bytes,
                        reload_interval_s=args.reload_interval_s,
                        redis_url=args.redis_from_file or args.redis or None,
                        redis_timeout_s=args.redis_timeout_ms / 1000,
                        admin_key=os.environ.get("SWITCHYARD_ADMIN_KEY") or None, audit=tuple(args.audit),
                        audit_key_file=args.audit_key_file, metrics_port=args.metrics_port)
    limits = SocketLimits(**{name: getattr(args, name) for _, name, _, _ in SOCKET_OPTIONS})
    try:
        serve(settings, ServeOptions(args.host, args.port, args.workers, args.drain_s, args.log_level, limits,
                                     args.metrics_host, args.access_log))
    except PolicyError as exc:
        print_problems(args.policy, exc)
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


def add_demo(commands: Commands) -> None:
    """The demo command and its options."""
    demo = commands.add_parser("demo", help="the gateway with two local stand-in upstreams, to try it out")
    listen_options(demo)
    demo.add_argument("--upstream-ports", type=port_pair, default=(0, 0), metavar="SELF,PROPRIETARY",
                      help="ports of the two stand-in upstreams on 127.0.0.1 (default: free ones)")
    demo.set_defaults(run=_demo)


def _demo(args: argparse.Namespace) -> int:
    from gateway.tools.demo import CannotListen, run_demo

    try:
        run_demo(args.host, args.port, args.log_level, args.upstream_ports)
    except CannotListen as exc:
        print(f"switchyard demo: {exc}", file=sys.stderr)
        return 1
    return 0
