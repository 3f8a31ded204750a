"""POST /v1/messages/count_tokens: the count of the Anthropic upstream the request would go to first, else the
gateway's own estimate (the one it budgets and routes with, not a tokenizer's).

The count request carries the prompt, so it goes only where the request itself would: it is classified and
decided as a Messages request is (gateway/pipeline/intake.py, admit.py), and only the decision's first candidate
is asked, and only when it is `kind: anthropic`. A request no upstream may serve, one whose first candidate is
any other upstream, and one whose upstream fails (unreachable, slow, a redirect, any error status, an answer that
is not a count) get the estimate; a 400 about the body is the client's to see. Nothing is charged or counted
against a rate limit, and no circuit or audit record is touched (docs/messages.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from gateway.asgi import JSON, Headers
from gateway.errors import NoCandidate, UpstreamError, UpstreamStatus
from gateway.operations.metrics import Metrics
from gateway.pipeline.admit import Admitter
from gateway.pipeline.inbound import Call, Endpoint, Inbound, Reply
from gateway.pipeline.intake import Taken
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


async def counted(runtime: Runtime, admitter: Admitter, inbound: Inbound, tenant: str, body: dict[str, Any],
                  headers: Mapping[str, str], metrics: Metrics) -> Reply:
    """The answer to a count_tokens request of tenant's, its route checked: its Anthropic upstream's, else ours."""
    features = await classify.features_of(runtime.policy, tenant, "messages", body, headers)
    identity: Headers = [(b"x-switchyard-data-class", features.data_class.encode())] if features.data_class else []
    taken = Taken(Call(ENDPOINT, body, body), features)
    upstream = await counter(runtime, admitter, inbound, taken)
    if upstream is None:
        return Reply(200, answer(body), JSON, identity)
    try:
        data = await upstream.count_tokens(body, headers)
    except UpstreamError as exc:
        metrics.count(metrics.upstream_errors, upstream.name, f"count_tokens_{exc.reason}")
        if isinstance(exc, UpstreamStatus) and exc.status in PASSED_ON:
            refused = inbound.upstream_error(taken.call, exc, scrub(exc.body, upstream))
            return Reply(refused.status, refused.body, refused.content_type, [*refused.headers, *identity])
        return Reply(200, answer(body), JSON, identity)
    region = (upstream.spec.region or "-").encode()
    served = [(b"x-switchyard-upstream", upstream.name.encode()), (b"x-switchyard-region", region)]
    return Reply(200, data, JSON, [*served, *identity])


async def counter(runtime: Runtime, admitter: Admitter, inbound: Inbound, taken: Taken) -> MessagesUpstream | None:
    """The upstream that counts this request: its decision's first candidate, when that is Anthropic's; else none."""
    try:
        decision = await admitter.decision(runtime, inbound, taken)
    except NoCandidate:
        return None  # no upstream may see it: the estimate, which never leaves the gateway
    first = runtime.upstreams.get(decision.candidates[0])
    if isinstance(first, MessagesUpstream) and first.spec.kind == "anthropic":
        return first
    return None
