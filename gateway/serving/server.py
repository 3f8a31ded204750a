"""Run the gateway under uvicorn: one process or several workers, with a graceful drain on SIGTERM."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from uvicorn.supervisors import Multiprocess

from gateway.operations import logs
from gateway.operations.metrics import prepare_multiprocess, serve_metrics
from gateway.serving.app import Gateway, Settings, create_app, provider_keys
from gateway.serving.connections import GatewayConfig, SocketLimits

logger = logging.getLogger("switchyard.server")
YOUNG_OBJECTS_BEFORE_GC = 20_000  # Python's default is 700


@dataclass(frozen=True)
class ServeOptions:
    """Where and how to listen."""

    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    drain_s: int = 30
    log_level: str = "info"
    limits: SocketLimits = field(default_factory=SocketLimits)
    metrics_host: str | None = None  # where --metrics-port listens; None: the same host as the gateway
    access_log: bool = False  # uvicorn's line per request, as JSON


class DrainingServer(uvicorn.Server):
    """uvicorn's server, exiting with status 0 after a graceful drain rather than re-raising the signal."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        originals = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in originals.items():
                signal.signal(sig, handler)


def uvicorn_config(app: Gateway | str, options: ServeOptions, **extra: Any) -> GatewayConfig:
    """The uvicorn settings: uvloop, the guarded httptools protocol, no access log, a bounded drain."""
    settings: dict[str, Any] = {"loop": "uvloop", "access_log": options.access_log, "log_level": options.log_level,
                                "lifespan": "on", "timeout_graceful_shutdown": round(options.drain_s),
                                "server_header": False, "proxy_headers": False, "log_config": None}
    return GatewayConfig(app, options.limits, host=options.host, port=options.port, **{**settings, **extra})


def tune_gc() -> None:
    """Set the garbage collector for serving, once everything built at start-up exists.

    Under load Python's collector took about 10% of the gateway's CPU: its full collections walked every
    object built at start-up (modules, the policy, its validators), and its young collections, one every
    700 allocations, walked the objects of every request in flight and found no garbage. Start-up objects
    are frozen out of its sight, and young collections run 30 times less often.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_OBJECTS_BEFORE_GC, *gc.get_threshold()[1:])


def worker_app() -> Gateway:
    """The app of one worker process, made by uvicorn in that process."""
    gateway = create_app()
    tune_gc()
    return gateway


def serve(settings: Settings, options: ServeOptions) -> None:
    """Serve until SIGTERM or SIGINT; then stop accepting, let requests finish up to the drain deadline, exit."""
    logs.configure(options.log_level, (), options.access_log)  # loading the policy may import litellm, which logs
    gateway = Gateway(settings)  # loads the policy now, so a bad one stops us before any port opens
    logs.configure(options.log_level, provider_keys(gateway.policy), options.access_log)
    os.environ["SWITCHYARD_LOG_LEVEL"] = options.log_level
    os.environ["SWITCHYARD_ACCESS_LOG"] = "1" if options.access_log else ""
    metrics_host = options.metrics_host or options.host
    if options.workers == 1:
        stop_metrics = serve_metrics(metrics_host, settings.metrics_port, gateway.metrics) \
            if settings.metrics_port is not None else None
        tune_gc()
        try:
            DrainingServer(uvicorn_config(gateway, options)).run()
        finally:
            if stop_metrics is not None:
                stop_metrics()
        return
    os.environ["SWITCHYARD_POLICY"] = settings.policy
    os.environ["SWITCHYARD_MAX_BODY_BYTES"] = str(settings.max_body_bytes)
    os.environ["SWITCHYARD_RELOAD_INTERVAL_S"] = str(settings.reload_interval_s)
    os.environ["SWITCHYARD_AUDIT"] = ",".join(settings.audit)
    if settings.audit_key_file:
        os.environ["SWITCHYARD_AUDIT_KEY_FILE"] = settings.audit_key_file
    if settings.redis_url:
        os.environ["SWITCHYARD_REDIS_URL"] = settings.redis_url
        os.environ["SWITCHYARD_REDIS_TIMEOUT_MS"] = repr(settings.redis_timeout_s * 1000)  # as given: 0.5 ms too
    else:
        logger.warning("%d workers without --redis: budgets and rate limits hold per worker, not in total",
                       options.workers)
    prepare_multiprocess(os.environ.get("SWITCHYARD_METRICS_DIR") or tempfile.mkdtemp(prefix="switchyard-metrics-"))
    config = uvicorn_config("gateway.serving.server:worker_app", options, factory=True, workers=options.workers)
    if settings.metrics_port is not None:  # the supervisor serves them, summed over the workers' files
        os.environ["SWITCHYARD_METRICS_PORT"] = str(settings.metrics_port)
        serve_metrics(metrics_host, settings.metrics_port)
    ReloadingSupervisor(config, sockets=[config.bind_socket()]).run()


class ReloadingSupervisor(Multiprocess):
    """uvicorn's worker supervisor, except that SIGHUP reaches the workers (each reloads its policy) instead
    of restarting them, which would take a broken policy down with it."""

    def handle_hup(self) -> None:
        for process in self.processes:
            if process.pid is not None:
                os.kill(process.pid, signal.SIGHUP)
