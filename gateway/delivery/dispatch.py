"""Execute a decision: try its candidates in order, retry what may be retried, fall back before any byte went out.

The one place where attempts are retried, abandoned, counted against the retry budget and the circuits.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from gateway.errors import (
    CircuitOpen,
    DeadlinePassed,
    GatewayError,
    NoCandidate,
    Saturated,
    UpstreamError,
    UpstreamFailed,
    UpstreamMalformed,
    UpstreamStatus,
    UpstreamTimeout,
    UpstreamTooLarge,
)
from gateway.operations.metrics import Metrics
from gateway.routing.policy.residency import residency_limited, residency_unavailable
from gateway.routing.policy.schema import Circuit, Resilience
from gateway.state.circuits import Circuits
from gateway.state.retry_budget import RetryBudget
from gateway.upstreams.base import Client, Exchange
from gateway.upstreams.redact import Redacting, Redactor
from gateway.values import value

T = TypeVar("T")
Accept = Callable[[Exchange], Awaitable[T]]
CREDENTIAL_STATUSES = (401, 403)
OUTPUT_LIMITS = ("max_tokens", "max_completion_tokens", "max_output_tokens")
NOT_IMPLEMENTED = 501


@dataclass
class Attempt:
    """One try at one upstream, as the audit trail and metrics see it."""

    upstream: str
    region: str
    outcome: str
    seconds: float

    def fields(self) -> dict[str, Any]:
        """The attempt as an audit record shows it."""
        return {"upstream": self.upstream, "region": self.region, "outcome": self.outcome,
                "ms": round(self.seconds * 1000, 3)}


@dataclass
class Dispatch:
    """The attempts made for one request, when it arrived (its deadline counts from then), and the upstream slot
    it holds until it is done."""

    attempts: list[Attempt] = field(default_factory=list)
    leases: list[Callable[[], None]] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def deadline(self, resilience: Resilience) -> float:
        """The time.monotonic() by which every attempt for the request ends, a continuation's too."""
        return self.started + resilience.deadline_s

    def finish(self) -> None:
        """Give back the upstream slot (and half-open probe) the request held while it was served."""
        while self.leases:
            self.leases.pop()()


class Plan(Protocol):
    """What the dispatcher reads of a routing decision: the route, its candidates in order, what was left out."""

    @property
    def route(self) -> str: ...
    @property
    def candidates(self) -> tuple[str, ...]: ...
    @property
    def data_class(self) -> str | None: ...
    @property
    def excluded(self) -> tuple[tuple[str, str], ...]: ...


@value
class Request:
    """What is sent to every candidate: the parsed body and the client's headers."""

    path: str
    body: Mapping[str, Any]
    headers: Mapping[str, str]
    stream: bool


@value
class Tries:
    """One round of the fallback loop: whom to try in order, with what, and the deadline every try ends by.

    A resumed round goes on with an answer the client already has part of: each candidate is tried once, and
    no upstream's refusal is the client's to read.
    """

    route: str
    candidates: Sequence[Client]
    resilience: Resilience
    request: Request
    deadline: float
    resumed: bool = False

    @property
    def per_upstream(self) -> int:
        """How many times one upstream is tried in this round."""
        return 1 if self.resumed else self.resilience.attempts_per_upstream

    def outcome(self, reason: str) -> str:
        """How a try of this round ended, as metrics and the audit trail name it."""
        return "continuation_" + reason if self.resumed else reason


class Inflight:
    """Requests in flight per upstream in this process, against each upstream's max_concurrency."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    def acquire(self, upstream: Client) -> bool:
        """Take a slot, or return False when the upstream is at its cap."""
        count = self._counts.get(upstream.name, 0)
        cap = upstream.spec.max_concurrency
        if cap is not None and count >= cap:
            return False
        self._counts[upstream.name] = count + 1
        return True

    def release(self, upstream: Client) -> None:
        """Give a slot back."""
        self._counts[upstream.name] -= 1

    def counts(self) -> Mapping[str, int]:
        """Requests in flight now, by upstream (every upstream ever sent one, at 0 when none is)."""
        return self._counts


class Dispatcher:
    """Runs the fallback loop for requests: the first attempts, and those that continue an answer begun."""

    def __init__(self, metrics: Metrics, inflight: Inflight, budget: RetryBudget) -> None:
        self.metrics = metrics
        self.inflight = inflight
        metrics.read_at_flush(metrics.inflight, inflight.counts)
        self.circuits = Circuits(self._circuit_changed)
        self.budget = budget
        self._redactors: dict[str, tuple[object, Redactor]] = {}

    async def run(self, decision: Plan, upstreams: Mapping[str, Client], resilience: Resilience,
                  request: Request, accept: Accept[T], record: Dispatch) -> tuple[Client, T]:
        """Hand the first good response to accept; UpstreamStatus for a client error, GatewayError when all fail."""
        self.budget.request(time.monotonic())
        tries = Tries(decision.route, [upstreams[name] for name in decision.candidates], resilience, request,
                      record.deadline(resilience))
        failures: list[UpstreamError] = []
        found = await self._fallback(tries, accept, record, failures)
        if found is None:
            raise _passed_on(failures) or _give_up(failures, decision)
        return found

    async def resume(self, tries: Tries, accept: Accept[T], record: Dispatch) -> tuple[Client, T] | None:
        """Try to go on with an answer the client already has part of (a stream cut short): one try per candidate,
        the retry budget paying for the round; None when none took it up."""
        if not self.budget.try_retry(time.monotonic()):
            return None
        return await self._fallback(tries, accept, record, [])

    async def _fallback(self, tries: Tries, accept: Accept[T], record: Dispatch,
                        failures: list[UpstreamError]) -> tuple[Client, T] | None:
        """Each candidate in turn until one answers, noting why each failed; None when every one did."""
        previous: tuple[str, str] | None = None
        smallest_window: int | None = None
        for upstream in tries.candidates:
            if smallest_window is not None and (upstream.spec.context_window or math.inf) <= smallest_window:
                continue
            if previous is not None:
                self.metrics.count(self.metrics.fallbacks, tries.route, previous[0], upstream.name, previous[1])
            try:
                return upstream, await self._one_upstream(upstream, tries, accept, record)
            except UpstreamError as exc:
                failures.append(exc)
                previous = (upstream.name, exc.reason)
                if isinstance(exc, UpstreamStatus) and exc.kind == "context_length":
                    smallest_window = upstream.spec.context_window or 0  # unknown: any declared window may be larger
                elif isinstance(exc, UpstreamStatus) and not tries.resumed and _the_clients(exc):
                    raise
            if time.monotonic() >= tries.deadline:
                break
        return None

    async def _one_upstream(self, upstream: Client, tries: Tries, accept: Accept[T], record: Dispatch) -> T:
        admitted = self.circuits.admit(upstream.name)
        if admitted is None:
            raise CircuitOpen(upstream.name)
        if not self.inflight.acquire(upstream):
            if admitted == "probe":
                self.circuits.release(upstream.name)
            raise Saturated(upstream.name)

        def lease() -> None:
            self.inflight.release(upstream)
            if admitted == "probe":
                self.circuits.release(upstream.name)

        try:
            result = await self._tries(upstream, tries, accept, record)
        except BaseException:
            lease()
            raise
        record.leases.append(lease)  # held until the response is done: a stream keeps its slot while it runs
        return result

    async def _tries(self, upstream: Client, tries: Tries, accept: Accept[T], record: Dispatch) -> T:
        request = tries.request
        payload = upstream.encode(request.body, request.stream)
        accept = _redacted(accept, self._redactor(upstream))
        for attempt in range(tries.per_upstream):
            started = time.monotonic()
            try:
                result = await _within(tries, upstream, payload, accept)
            except UpstreamError as exc:
                opened = self._failed(upstream, exc, tries, record, started, payload)
                pause = _pause(exc, attempt, tries)
                if pause is None or opened or not self.budget.try_retry(time.monotonic()):
                    raise
                self.metrics.count(self.metrics.retries, upstream.name, exc.reason)
                await asyncio.sleep(pause)
                continue
            record.attempts.append(Attempt(upstream.name, upstream.spec.region or "-", tries.outcome("ok"),
                                           time.monotonic() - started))
            self.circuits.success(upstream.name)
            return result
        raise AssertionError("unreachable: the last try raises")

    def _failed(self, upstream: Client, exc: UpstreamError, tries: Tries, record: Dispatch, started: float,
                payload: bytes) -> bool:
        """Record a failed try; True when it opened the upstream's circuit (then it is not tried again)."""
        now = time.monotonic()
        reason = tries.outcome(exc.reason)
        record.attempts.append(Attempt(upstream.name, upstream.spec.region or "-", reason, now - started))
        self.metrics.count(self.metrics.upstream_errors, upstream.name, reason)
        if not counts_against_circuit(exc, is_small(tries.request, payload, tries.resilience.circuit)):
            return False
        return self.circuits.failure(upstream.name, now, tries.resilience.circuit.failures) is not None

    def _redactor(self, upstream: Client) -> Redactor | None:
        """None for a client that redacts what it hands on itself; else one made once per upstream spec."""
        if isinstance(getattr(upstream, "redact", None), Redactor):
            return None
        cached = self._redactors.get(upstream.name)
        if cached is None or cached[0] is not upstream.spec:
            key = upstream.spec.api_key.get_secret_value() if upstream.spec.api_key is not None else None
            cached = self._redactors[upstream.name] = (upstream.spec, Redactor(key))
        return cached[1]

    def _circuit_changed(self, upstream: str, state: int) -> None:
        self.metrics.child(self.metrics.circuit_state, upstream).set(state)


async def _within(tries: Tries, upstream: Client, payload: bytes, accept: Accept[T]) -> T:
    """One try, cut short by the overall deadline when that could come first."""
    request = tries.request
    remaining = tries.deadline - time.monotonic()
    if remaining <= 0:
        raise DeadlinePassed(upstream.name)
    if remaining >= tries.resilience.per_try_timeout_s and not request.stream:  # a stream waits for its first event too
        return await accept(await upstream.send(request.path, payload, request.headers, request.stream))
    try:
        async with asyncio.timeout(remaining):
            return await accept(await upstream.send(request.path, payload, request.headers, request.stream))
    except TimeoutError:
        raise DeadlinePassed(upstream.name) from None


def _redacted(accept: Accept[T], redact: Redactor | None) -> Accept[T]:
    """accept, handed an exchange whose bytes are redacted when its client does not redact them itself."""
    if redact is None:
        return accept

    async def redacting(exchange: Exchange) -> T:
        return await accept(Redacting(exchange, redact))

    return redacting


def is_small(request: Request, payload: bytes, circuit: Circuit) -> bool:
    """Whether a request is too small to be slow on its own account, so that its timeout is the upstream's fault.

    Small: its body is at most small_request_bytes, and (unless it is a stream, whose first event does not wait
    for the whole answer, or an embedding) it asks for at most small_max_tokens in all, over every choice.
    """
    if len(payload) > circuit.small_request_bytes:
        return False
    if request.stream or request.path == "/embeddings":
        return True
    body = request.body
    for limit in OUTPUT_LIMITS:
        cap = body.get(limit)
        if isinstance(cap, int):
            choices = body.get("n")
            return cap * (choices if isinstance(choices, int) and choices > 0 else 1) <= circuit.small_max_tokens
    return False


def counts_against_circuit(exc: UpstreamError, small: bool = True) -> bool:
    """Failures that say the upstream is unwell, not that the request was hard or wrong.

    Counted: no connection or a reset, silence then close, a redirect, a 5xx that is not 501 and not a
    context-length refusal, and a timeout of a small request (see is_small). Not counted: 4xx, 501, a timeout
    of a big request or of the request's own deadline, an answer over a size limit, our own limits.
    """
    if isinstance(exc, UpstreamStatus):
        return exc.status >= 500 and exc.status != NOT_IMPLEMENTED and exc.kind is None
    if isinstance(exc, UpstreamTimeout):
        return small and not isinstance(exc, DeadlinePassed)
    return not isinstance(exc, Saturated | CircuitOpen | UpstreamTooLarge | UpstreamMalformed)


def _the_clients(exc: UpstreamStatus) -> bool:
    """A 4xx that is the client's to see at once: not retried, not a credential problem of ours."""
    return exc.status < 500 and not exc.retryable and exc.status not in CREDENTIAL_STATUSES


def _passed_on(failures: list[UpstreamError]) -> UpstreamStatus | None:
    """When every failure was an answer, the one the client should read: a context-length refusal, else a 501."""
    if not failures or not all(isinstance(f, UpstreamStatus) for f in failures):
        return None
    statuses = [f for f in failures if isinstance(f, UpstreamStatus)]
    return (next((f for f in statuses if f.kind == "context_length"), None)
            or next((f for f in statuses if f.status == NOT_IMPLEMENTED), None))


def _pause(exc: UpstreamError, attempt: int, tries: Tries) -> float | None:
    """How long to wait before trying the same upstream again, or None to move on."""
    if not exc.retryable or attempt + 1 >= tries.per_upstream:
        return None
    low, high = tries.resilience.backoff_ms
    ceiling = min(high, low * 2**attempt) / 1000
    pause = ceiling / 2 + random.uniform(0, ceiling / 2)  # "equal jitter": spread out, never near zero
    if isinstance(exc, UpstreamStatus) and exc.retry_after is not None:
        wanted = retry_after_seconds(exc.retry_after, time.time())
        if wanted is not None:
            pause = wanted
    return pause if time.monotonic() + pause < tries.deadline else None


def retry_after_seconds(value: str, now: float) -> float | None:
    """A Retry-After header (seconds or an HTTP date) as seconds from now, or None when unreadable."""
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


def _give_up(failures: list[UpstreamError], decision: Plan) -> GatewayError:
    """The error the client sees once every candidate failed: sanitized, naming only policy names."""
    summary = "; ".join(f"{f.upstream}: {f.reason}" for f in failures) or "no candidate was tried"
    if residency_limited(decision.excluded):
        return residency_unavailable(decision.data_class, summary, decision.excluded)
    if failures and all(isinstance(f, CircuitOpen) for f in failures):
        return NoCandidate("no_healthy_upstream", f"every candidate of route '{decision.route}' is unavailable")
    if failures and all(isinstance(f, UpstreamTimeout) for f in failures):
        status, code = 504, "upstream_timeout"
    elif failures and all(isinstance(f, Saturated) for f in failures):
        status, code = 503, "upstream_saturated"
    else:
        status, code = 502, "upstream_error"
    return UpstreamFailed(f"route '{decision.route}': every candidate failed ({summary})", status=status, code=code)


@dataclass(frozen=True, slots=True)
class Resume:
    """A request's way back into the fallback loop once its answer has begun: its dispatcher, route and record."""

    dispatcher: Dispatcher
    route: str
    record: Dispatch
