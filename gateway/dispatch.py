"""Execute a decision: try its candidates in order, retry what may be retried, fall back before any byte went out."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from gateway.errors import GatewayError, NoCandidate, UpstreamError, UpstreamFailed, UpstreamStatus, UpstreamTimeout
from gateway.metrics import Metrics
from gateway.policy.decide import Decision, residency_limited
from gateway.policy.schema import Resilience
from gateway.upstreams.openai import Exchange, OpenAIUpstream

T = TypeVar("T")
Accept = Callable[[Exchange], Awaitable[T]]
CREDENTIAL_STATUSES = (401, 403)


@dataclass
class Attempt:
    """One try at one upstream, as the audit trail and metrics see it."""

    upstream: str
    outcome: str
    seconds: float


@dataclass
class Dispatch:
    """The attempts made for one request."""

    attempts: list[Attempt] = field(default_factory=list)


class Inflight:
    """Requests in flight per upstream in this process, against each upstream's max_concurrency."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    def acquire(self, upstream: OpenAIUpstream) -> bool:
        """Take a slot, or return False when the upstream is at its cap."""
        count = self._counts.get(upstream.name, 0)
        cap = upstream.spec.max_concurrency
        if cap is not None and count >= cap:
            return False
        self._counts[upstream.name] = count + 1
        return True

    def release(self, upstream: OpenAIUpstream) -> None:
        """Give a slot back."""
        self._counts[upstream.name] -= 1


class Dispatcher:
    """Runs the fallback loop for requests; the one place where candidates are retried and abandoned."""

    def __init__(self, metrics: Metrics, inflight: Inflight) -> None:
        self.metrics = metrics
        self.inflight = inflight

    async def run(self, decision: Decision, upstreams: Mapping[str, OpenAIUpstream], resilience: Resilience,
                  request: Request, accept: Accept[T], record: Dispatch) -> tuple[OpenAIUpstream, T]:
        """Hand the first good response to accept; UpstreamStatus for a client error, UpstreamFailed when all fail."""
        deadline = time.monotonic() + resilience.deadline_s
        failures: list[UpstreamError] = []
        previous: tuple[str, str] | None = None
        for name in decision.candidates:
            upstream = upstreams[name]
            if previous is not None:
                self.metrics.count(self.metrics.fallbacks, decision.route, previous[0], name, previous[1])
            try:
                return upstream, await self._one_upstream(upstream, resilience, request, accept, record, deadline)
            except UpstreamError as exc:
                failures.append(exc)
                previous = (name, exc.reason)
                if isinstance(exc, UpstreamStatus) and not exc.retryable and exc.status not in CREDENTIAL_STATUSES:
                    raise
            if time.monotonic() >= deadline:
                break
        raise _give_up(failures, decision)

    async def _one_upstream(self, upstream: OpenAIUpstream, resilience: Resilience, request: Request,
                            accept: Accept[T], record: Dispatch, deadline: float) -> T:
        if not self.inflight.acquire(upstream):
            raise Saturated(upstream.name)
        gauge = self.metrics.child(self.metrics.inflight, upstream.name)
        gauge.inc()
        try:
            return await self._tries(upstream, resilience, request, accept, record, deadline)
        finally:
            gauge.dec()
            self.inflight.release(upstream)

    async def _tries(self, upstream: OpenAIUpstream, resilience: Resilience, request: Request, accept: Accept[T],
                     record: Dispatch, deadline: float) -> T:
        payload = upstream.encode(request.body, request.stream)
        for attempt in range(resilience.attempts_per_upstream):
            started = time.monotonic()
            try:
                exchange = await upstream.send(request.path, payload, request.headers, request.stream)
                result = await accept(exchange)
            except UpstreamError as exc:
                record.attempts.append(Attempt(upstream.name, exc.reason, time.monotonic() - started))
                self.metrics.count(self.metrics.upstream_errors, upstream.name, exc.reason)
                pause = _pause(exc, attempt, resilience, deadline)
                if pause is None:
                    raise
                await asyncio.sleep(pause)
                continue
            record.attempts.append(Attempt(upstream.name, "ok", time.monotonic() - started))
            return result
        raise AssertionError("unreachable: the last try raises")


@dataclass(frozen=True, slots=True)
class Request:
    """What is sent to every candidate: the parsed body and the client's headers."""

    path: str
    body: Mapping[str, Any]
    headers: Mapping[str, str]
    stream: bool


class Saturated(UpstreamError):
    """The upstream is at its max_concurrency in this process."""

    reason = "saturated"


def _pause(exc: UpstreamError, attempt: int, resilience: Resilience, deadline: float) -> float | None:
    """How long to wait before trying the same upstream again, or None to move on."""
    if not exc.retryable or isinstance(exc, UpstreamTimeout) or attempt + 1 >= resilience.attempts_per_upstream:
        return None
    low, high = resilience.backoff_ms
    pause = random.uniform(0, min(high, low * 2**attempt)) / 1000
    if isinstance(exc, UpstreamStatus) and exc.retry_after is not None:
        pause = _retry_after_seconds(exc.retry_after, pause)
    return pause if time.monotonic() + pause < deadline else None


def _retry_after_seconds(value: str, fallback: float) -> float:
    try:
        return max(0.0, float(value))
    except ValueError:
        return fallback


def _give_up(failures: list[UpstreamError], decision: Decision) -> GatewayError:
    """The error the client sees once every candidate failed: sanitized, naming only policy names."""
    summary = "; ".join(f"{f.upstream}: {f.reason}" for f in failures) or "no candidate was tried"
    if residency_limited(decision.excluded):
        return NoCandidate("residency_unavailable", f"every upstream allowed for data class "
                           f"'{decision.data_class}' failed ({summary}); no other upstream may stand in")
    if failures and all(isinstance(f, UpstreamTimeout) for f in failures):
        status, code = 504, "upstream_timeout"
    elif failures and all(isinstance(f, Saturated) for f in failures):
        status, code = 503, "upstream_saturated"
    else:
        status, code = 502, "upstream_error"
    return UpstreamFailed(f"route '{decision.route}': every candidate failed ({summary})", status=status, code=code)
