"""Decide a request offline and say why: `switchyard policy explain` and `switchyard policy test`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from gateway.errors import GatewayError, NoCandidate
from gateway.pipeline.auth import check_route
from gateway.routing import classify
from gateway.routing.policy.decide import Decision, Features, Live, completion_estimate, decide, matching_rule
from gateway.routing.policy.model import Policy

Endpoint = Literal["chat", "completions", "embeddings", "responses", "messages"]
ENDPOINTS: tuple[str, ...] = get_args(Endpoint)  # every endpoint the gateway decides: /v1/chat/completions ...


@dataclass
class Outcome:
    """A decision, or the error it ended in, with what led there."""

    tenant: str
    features: Features | None = None
    class_reason: str = ""
    decision: Decision | None = None
    error: GatewayError | None = None
    excluded: tuple[tuple[str, str], ...] = ()
    steps: list[str] = field(default_factory=list)


def evaluate(policy: Policy, tenant: str, body: dict[str, Any], headers: Mapping[str, str] | None = None,
             live: Live | None = None, endpoint: str = "chat") -> Outcome:
    """Run steps 2 to 6 of the policy for tenant and body, sending nothing."""
    lowered = {k.lower(): str(v) for k, v in (headers or {}).items()}
    outcome = Outcome(tenant)
    try:
        check_route(policy, tenant, body)
        outcome.features = classify.features(policy, tenant, endpoint, body, lowered)
        _, outcome.class_reason = classify.explain_class(policy, tenant, lowered,
                                                         classify.request_texts(endpoint, body))
        outcome.decision = decide(policy, outcome.features, live or Live())
        outcome.excluded = outcome.decision.excluded
    except NoCandidate as exc:
        outcome.error, outcome.excluded = exc, exc.excluded
    except GatewayError as exc:
        outcome.error = exc
    return outcome


def trace(policy: Policy, outcome: Outcome) -> list[str]:
    """The outcome as numbered lines a person can follow."""
    lines = [f"policy {policy.hash} ({policy.source})", f"1. who: tenant '{outcome.tenant}'"]
    features = outcome.features
    if features is None:
        assert outcome.error is not None
        return [*lines, f"-> {outcome.error.status} {outcome.error.code}: {outcome.error.message}"]
    choices = f", n {features.n}" if features.n > 1 else ""
    lines.append(f"2. route: '{features.route}' (estimated prompt {features.prompt_tokens} tokens, "
                 f"max_tokens {features.max_tokens or 'route default'}{choices}, stream {features.stream})")
    lines.append(f"3. data class: {features.data_class or '-'} ({outcome.class_reason})")
    rule = matching_rule(policy, features)
    lines.append(f"   rule: {rule.name if rule else 'none matched'}")
    route = policy.doc.models[features.route]
    lines.append("4. candidates:")
    excluded = dict(outcome.excluded)
    for name in route.candidates:
        upstream = policy.doc.upstreams[name]
        verdict = f"excluded ({excluded[name]})" if name in excluded else "allowed"
        lines.append(f"   {name:<24} {upstream.hosting:<11} {upstream.region or '-':<10} {verdict}")
    if outcome.error is not None:
        return [*lines, f"5. -> {outcome.error.status} {outcome.error.code}: {outcome.error.message}"]
    decision = outcome.decision
    assert decision is not None
    lines.append(f"6. order by {decision.objective}:")
    completion = completion_estimate(features, route)
    for i, name in enumerate(decision.candidates, 1):
        cost = policy.cost(name, features.prompt_tokens, completion)
        lines.append(f"   {i}. {name:<24} estimated ${cost:.6f}")
    return lines + capacity_lines(decision)


def capacity_lines(decision: Decision) -> list[str]:
    """Why full upstreams stand last: each moved behind every open candidate, and whose first place it took."""
    if not decision.moved_back:
        return []
    lines = [f"   moved back (full): {', '.join(decision.moved_back)}: a full upstream goes behind every open "
             "candidate; it is never excluded"]
    if decision.spilled_from is not None:
        lines.append(f"   spilled from {decision.spilled_from} to {decision.candidates[0]} "
                     f"(header x-switchyard-spilled-from: {decision.spilled_from})")
    return lines
