"""POST /v1/messages/count_tokens: the count of the Anthropic upstream the request would go to first, else the
gateway's own estimate (the one it budgets and routes with, not a tokenizer's).

The count request carries the prompt, so it goes only where the request itself would: it is classified and
decided as a Messages request is (gateway/pipeline/intake.py, admit.py), and only the decision's first candidate
is asked, and only when it is `kind: anthropic`. A request no upstream may serve, one whose first candidate is
any other upstream, and one whose upstream fails (unreachable, slow, a redirect, any error status, an answer that
is not a count) get the estimate; a 400 about the body is the client's to see. Nothing is charged or counted
against a rate limit, and no circuit is touched; the request is counted (`endpoint="count_tokens"`) and audited
like any other, its attempt at the upstream included, so the audit trail shows every place a prompt went.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import orjson

from gateway.asgi import JSON
from gateway.delivery.dispatch import Attempt
from gateway.errors import NoCandidate, UpstreamError, UpstreamStatus
from gateway.operations.metrics import Metrics
from gateway.pipeline.admit import Admitter
from gateway.pipeline.inbound import Call, Endpoint, Inbound, Reply
from gateway.pipeline.intake import Taken
from gateway.pipeline.record import Record
from gateway.pipeline.runtime import Runtime
from gateway.routing import classify
from gateway.upstreams.messages import MessagesUpstream
from gateway.upstreams.redact import scrub

ENDPOINT = Endpoint("/v1/messages/count_tokens", "messages", "/messages/count_tokens", streamable=False)
PASSED_ON = frozenset({400})  # an upstream's refusal of the body itself: the client's to see, as Anthropic's error


def input_tokens(body: dict[str, Any]) -> int:
    """The estimated input tokens of a Messages request: every string the upstream would read, as classify counts."""
    return classify.request_texts("messages", body).prompt_tokens()


def answer(body: dict[str, Any]) -> bytes:
    """The gateway's own count_tokens answer for body."""
    return orjson.dumps({"input_tokens": input_tokens(body)})


async def counted(runtime: Runtime, admitter: Admitter, inbound: Inbound, record: Record, body: dict[str, Any],
                  headers: Mapping[str, str], metrics: Metrics) -> Reply:
    """The answer to a count_tokens request of record's tenant, its route checked: its Anthropic upstream's, else
    ours; record notes the decision, and the upstream asked and how that went."""
    features = await classify.features_of(runtime.policy, record.tenant, "messages", body, headers)
    record.data_class, record.prompt_tokens = features.data_class or "-", features.prompt_tokens
    taken = Taken(Call(ENDPOINT, body, body), features)
    upstream = await counter(runtime, admitter, inbound, taken, record)
    if upstream is None:
        return estimated(body, record)
    started = time.monotonic()
    try:
        data = await upstream.count_tokens(body, headers)
    except UpstreamError as exc:
        _attempt(record, upstream, f"count_tokens_{exc.reason}", started)
        metrics.count(metrics.upstream_errors, upstream.name, f"count_tokens_{exc.reason}")
        if isinstance(exc, UpstreamStatus) and exc.status in PASSED_ON:
            record.served_by(upstream)
            return inbound.upstream_error(taken.call, exc, scrub(exc.body, upstream))
        return estimated(body, record)
    _attempt(record, upstream, "ok", started)
    record.served_by(upstream)
    return Reply(200, data, JSON, [])


def estimated(body: dict[str, Any], record: Record) -> Reply:
    """The gateway's own count, noted in record as such."""
    record.outcome = "estimated"
    return Reply(200, answer(body), JSON, [])


def _attempt(record: Record, upstream: MessagesUpstream, outcome: str, started: float) -> None:
    record.dispatch.attempts.append(Attempt(upstream.name, upstream.spec.region or "-", outcome,
                                            time.monotonic() - started))


async def counter(runtime: Runtime, admitter: Admitter, inbound: Inbound, taken: Taken,
                  record: Record | None = None) -> MessagesUpstream | None:
    """The upstream that counts this request: its decision's first candidate, when that is Anthropic's; else none.
    record, if given, notes the decision (or the refusal: the count is then estimated, never refused)."""
    try:
        decision = await admitter.decision(runtime, inbound, taken)
    except NoCandidate as exc:
        if record is not None:
            record.excluded = exc.excluded
        return None  # no upstream may see it: the estimate, which never leaves the gateway
    if record is not None:
        record.candidates, record.excluded, record.rule = decision.candidates, decision.excluded, decision.rule or "-"
    first = runtime.upstreams.get(decision.candidates[0])
    if isinstance(first, MessagesUpstream) and first.spec.kind == "anthropic":
        return first
    return None
