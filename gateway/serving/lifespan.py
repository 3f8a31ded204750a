"""The gateway's lifespan: open the upstream connections, serve the policy and its reloads, close everything after."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Callable, Iterator

from gateway.operations import logs
from gateway.operations.reload import Reloader
from gateway.pipeline.runtime import Runtime
from gateway.routing.capacity.poller import new_session
from gateway.routing.policy.model import Policy
from gateway.serving.components import Components
from gateway.serving.keys import warn_of_public_keys
from gateway.state.circuits import CLOSED, STATE_NAMES
from gateway.upstreams.http import Pool

METRICS_FLUSH_S = 1.0
CLIENTS_CLOSE_S = 2.0  # at shutdown, how long upstream clients wait for exchanges still open before closing anyway
STATE_VALUES = {name: value for value, name in STATE_NAMES.items()}
logger = logging.getLogger("switchyard.app")


@contextlib.asynccontextmanager
async def lifespan(parts: Components) -> AsyncIterator[None]:
    """Serve parts' policy (and each reload of it) until the server stops, with the tasks that keep it."""
    pool, session = Pool(), new_session()  # requests' connections; capacity polls'
    retired: set[asyncio.Task[None]] = set()  # old runtimes, each closing once its open exchanges end

    def apply(policy: Policy) -> None:
        warn_of_public_keys(policy)
        parts.policy = policy
        old, parts.runtime = parts.runtime, Runtime.build(policy, pool)
        if old is not None:
            retired.add(task := asyncio.create_task(old.aclose()))
            task.add_done_callback(retired.discard)
        logs.adopt_foreign_loggers()  # building an upstream client may have imported litellm just now
        parts.metrics.set_policy(policy.hash)
        parts.capacity.start(policy, session)
        known = {name: STATE_VALUES[state] for name, state in parts.circuits.states().items()}
        parts.metrics.show_circuits({name: known.get(name, CLOSED) for name in policy.doc.upstreams})

    apply(parts.policy)
    logger.info("serving policy %s (hash %s)", parts.policy_path, parts.policy.hash)
    parts.reloader = Reloader(parts.settings.policy, parts.metrics, apply, parts.settings.reload_interval_s)
    tasks = [asyncio.create_task(parts.reloader.run()), asyncio.create_task(parts.audit.run()),
             asyncio.create_task(_flush_metrics(parts))]
    try:
        with _sighup_handler(parts.reloader.request):
            yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await parts.capacity.close()
        parts.audit.close()
        if parts.runtime is not None:
            retired.add(asyncio.create_task(parts.runtime.aclose()))
        parts.runtime = None
        await _closed(retired, CLIENTS_CLOSE_S)
        parts.reloader = None
        await pool.close()
        await session.close()
        await parts.ledger.backend.close()


async def _closed(tasks: set[asyncio.Task[None]], timeout_s: float) -> None:
    """Wait for tasks to end; cancel those still running after timeout_s (a client then closes at once)."""
    if tasks:
        _, pending = await asyncio.wait(list(tasks), timeout=timeout_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


async def _flush_metrics(parts: Components) -> None:
    """Apply tallied metric updates once a second, so other workers' scrapes see them too."""
    try:
        while True:
            await asyncio.sleep(METRICS_FLUSH_S)
            parts.metrics.flush()
    finally:
        parts.metrics.flush()


@contextlib.contextmanager
def _sighup_handler(callback: Callable[[], None]) -> Iterator[None]:
    """SIGHUP reloads the policy, where this thread may take signals."""
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGHUP, callback)
    except (ValueError, RuntimeError, NotImplementedError):  # not the main thread (tests), or no SIGHUP here
        yield
        return
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGHUP)
