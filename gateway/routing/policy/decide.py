"""The routing decision: which upstreams may serve a request, and in what order. Pure: no I/O, no clock."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from gateway.errors import NoCandidate
from gateway.routing.policy.model import Policy
from gateway.routing.policy.residency import residency_limited
from gateway.routing.policy.schema import Route, Rule, Tenant, Upstream
from gateway.values import value


@value
class Features:
    """What the decision needs to know of a request."""

    route: str
    tenant: str
    prompt_tokens: int
    endpoint: str = "chat"
    max_tokens: int | None = None
    n: int = 1
    stream: bool = False
    has_tools: bool = False
    wants_json: bool = False
    has_images: bool = False
    data_class: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Live:
    """What the gateway has observed of its upstreams, handed to the decision as data."""

    open_circuits: frozenset[str] = frozenset()
    ttft_p95_ms: Mapping[str, float] = field(default_factory=dict)
    full: frozenset[str] = frozenset()


@value
class Decision:
    """Upstreams to try, in order, and why the others were left out."""

    route: str
    candidates: tuple[str, ...]
    rule: str | None
    objective: str
    data_class: str | None
    excluded: tuple[tuple[str, str], ...] = ()
    moved_back: tuple[str, ...] = ()
    spilled_from: str | None = None


NO_LIVE = Live()
MAX_TOKEN_FIELDS: Mapping[str, tuple[str, ...]] = {  # each endpoint's own caps; the largest given counts
    "chat": ("max_completion_tokens", "max_tokens"), "completions": ("max_tokens",),
    "responses": ("max_output_tokens",), "embeddings": (), "messages": ("max_tokens",)}
CHOICE_FIELDS: Mapping[str, tuple[str, ...]] = {  # fields that multiply the completions generated
    "chat": ("n",), "completions": ("n", "best_of"), "responses": (), "embeddings": (), "messages": ()}
MAX_CHOICES = 128


def decide(policy: Policy, features: Features, live: Live = NO_LIVE, only: frozenset[str] | None = None) -> Decision:
    """Apply steps 4 to 6 of the policy to one request; NoCandidate when nothing may serve it.

    `only` narrows the candidates further: the upstreams a spent budget degrades to.
    """
    route = policy.doc.models[features.route]
    tenant = policy.doc.tenants[features.tenant]
    rule = matching_rule(policy, features) if policy.doc.rules else None
    names = list(route.candidates) if rule is None else [n for n in route.candidates if n not in rule.exclude]
    excluded: list[tuple[str, str]] = [(n, "rule") for n in route.candidates if n not in names] if rule else []
    if not names:
        assert rule is not None
        raise NoCandidate("policy_denied", f"rule '{rule.name}' excludes every upstream of route '{features.route}'")
    upstreams = policy.doc.upstreams
    for reason, code, allowed in _filters(policy, tenant, route, features, live, only):
        kept = [n for n in names if allowed(n, upstreams[n])]
        if len(kept) < len(names):
            excluded += [(n, reason) for n in names if n not in kept]
        if not kept:
            raise _refusal(code, features, excluded)
        names = kept
    objective = rule.objective if rule is not None and rule.objective else route.objective
    ordered = order(policy, route, features, objective, names, live) if len(names) > 1 else names
    if rule is not None and rule.prefer:
        ordered = [n for n in rule.prefer if n in ordered] + [n for n in ordered if n not in rule.prefer]
    moved_back: tuple[str, ...] = ()
    spilled_from = None
    if live.full:
        ordered, moved_back, spilled_from = behind_full(ordered, live.full)
    return Decision(features.route, tuple(ordered), rule.name if rule else None, objective, features.data_class,
                    tuple(excluded), moved_back, spilled_from)


def behind_full(ordered: list[str], full: frozenset[str]) -> tuple[list[str], tuple[str, ...], str | None]:
    """Full upstreams moved behind every other, each group in its order; what moved, and the first choice it cost.

    Nothing moves when every candidate is full (the request still goes where it may, and queues there).
    """
    open_ = [n for n in ordered if n not in full]
    if not open_ or len(open_) == len(ordered):
        return ordered, (), None
    moved = tuple(n for n in ordered if n in full)
    return open_ + list(moved), moved, ordered[0] if ordered[0] in full else None


Filter = tuple[str, str, Callable[[str, Upstream], bool]]  # reason, error code (capability ones: "code:NAME"), test


def _filters(policy: Policy, tenant: Tenant, route: Route, features: Features, live: Live,
             only: frozenset[str] | None) -> list[Filter]:
    """The step-4 filters in the order whose first empty result names the error."""
    data_class = policy.doc.data_classes.get(features.data_class) if features.data_class else None
    window = features.prompt_tokens + completion_per_choice(features, route)
    needs = needed_capabilities(features)
    filters: list[Filter] = []
    if data_class is not None and data_class.hosting is not None:
        hosting = data_class.hosting
        filters.append(("data_class", "residency_unavailable", lambda _, u: u.hosting in hosting))
    if data_class is not None and data_class.regions is not None:
        regions = data_class.regions
        filters.append(("data_class", "residency_unavailable", lambda _, u: u.region in regions))
    if tenant.regions is not None:
        tenant_regions = tenant.regions
        filters.append(("tenant_region", "residency_unavailable", lambda _, u: u.region in tenant_regions))
    if only is not None:
        filters.append(("budget", "budget_exhausted", lambda n, _: n in only))
    for need in needs:  # one filter each, so the one that leaves nothing names the capability
        filters.append(("capability", f"capability_unavailable:{need}", _supporting(need)))
    if features.endpoint not in ("chat", "messages"):  # translated upstreams speak chat completions (and Messages)
        filters.append(("capability", "capability_unavailable:translated", lambda _, u: u.kind == "openai"))
    smallest = policy.smallest_window[features.route]
    if smallest is not None and window > smallest:  # else every candidate's window holds it
        filters.append(("context_window", "context_length_exceeded",
                        lambda _, u: u.context_window is None or window <= u.context_window))
    if live.open_circuits:
        filters.append(("circuit_open", "no_healthy_upstream", lambda n, _: n not in live.open_circuits))
    return filters


def _supporting(capability: str) -> Callable[[str, Upstream], bool]:
    return lambda _, upstream: upstream.supports(capability)


def completion_per_choice(features: Features, route: Route) -> int:
    """The tokens one choice may generate: the request's max_tokens, else the route's default; none for embeddings."""
    if not MAX_TOKEN_FIELDS[features.endpoint]:
        return 0
    return features.max_tokens or route.default_max_tokens


def completion_estimate(features: Features, route: Route) -> int:
    """The completion tokens to plan for: every choice (`n`) at its most."""
    return completion_per_choice(features, route) * features.n


def needed_capabilities(features: Features) -> tuple[str, ...]:
    """The capabilities an upstream must support to serve this request, in the order they are checked."""
    if not (features.has_tools or features.wants_json or features.has_images or features.endpoint == "responses"):
        return NOTHING_NEEDED
    return tuple(c for c, wanted in (("responses", features.endpoint == "responses"), ("tools", features.has_tools),
                                     ("json", features.wants_json), ("vision", features.has_images)) if wanted)


NOTHING_NEEDED: tuple[str, ...] = ()
CAPABILITY_WORDS: Mapping[str, str] = {
    "tools": "'tools' (the request has tools)", "json": "'json' (the request asks for a JSON response_format)",
    "vision": "'vision' (the request has images)", "responses": "'responses' (the Responses API)"}


def _refusal(code: str, features: Features, excluded: list[tuple[str, str]]) -> NoCandidate:
    """The error for a filter that left nothing; a capability's names the capability and its param."""
    code, _, capability = code.partition(":")
    if code == "no_healthy_upstream" and residency_limited(excluded):
        code = "residency_unavailable"
    if code != "capability_unavailable":
        return NoCandidate(code, _explain(code, features), excluded)
    where = f"no allowed upstream of route '{features.route}'"
    if capability == "translated":
        message = (f"{where} can serve {features.endpoint}: upstreams translated through litellm serve chat "
                   "completions only")
        return NoCandidate(code, message, excluded)
    needs = needed_capabilities(features)
    earlier = needs[:needs.index(capability)]
    also = f" together with {', '.join(repr(c) for c in earlier)}" if earlier else ""
    return NoCandidate(code, f"{where} supports {CAPABILITY_WORDS[capability]}{also}", excluded,
                       param=capability_param(capability, features.endpoint))


def capability_param(capability: str, endpoint: str) -> str | None:
    """The request field that needs capability, for the error's `param`."""
    if capability == "json":
        return "text.format" if endpoint == "responses" else "response_format"
    if capability == "vision":
        return "input" if endpoint == "responses" else "messages"
    return "tools" if capability == "tools" else None


def _explain(code: str, features: Features) -> str:
    what = {
        "residency_unavailable": f"no upstream allowed for data class '{features.data_class}' and this tenant's "
                                 "regions can serve this request now; no other upstream may stand in",
        "context_length_exceeded": f"the estimated prompt of {features.prompt_tokens} tokens"
                                   f"{' plus max_tokens' if MAX_TOKEN_FIELDS[features.endpoint] else ''} fits "
                                   "no allowed upstream's context window",
        "no_healthy_upstream": "every allowed upstream is unavailable right now",
        "budget_exhausted": "the budget is spent and none of the upstreams it degrades to may serve this request",
    }
    return f"{what[code]} (route '{features.route}')"


def matching_rule(policy: Policy, features: Features) -> Rule | None:
    """The first rule whose every condition holds, or None."""
    for rule in policy.doc.rules:
        if _matches(rule, features):
            return rule
    return None


def _matches(rule: Rule, features: Features) -> bool:
    m = rule.match
    return ((m.route is None or features.route in m.route)
            and (m.tenant is None or features.tenant in m.tenant)
            and (m.data_class is None or features.data_class in m.data_class)
            and all(features.headers.get(k) == v for k, v in m.header.items())
            and (m.prompt_tokens_over is None or features.prompt_tokens > m.prompt_tokens_over)
            and (m.has_tools is None or features.has_tools == m.has_tools)
            and (m.stream is None or features.stream == m.stream))


def order(policy: Policy, route: Route, features: Features, objective: str, names: list[str],
          live: Live) -> list[str]:
    """Sort allowed upstreams by the objective; ties keep list order."""
    if len(names) < 2:
        return names
    if objective == "cost":
        completion = completion_estimate(features, route)
        return sorted(names, key=lambda n: policy.cost(n, features.prompt_tokens, completion))
    if objective == "latency":
        return _by_latency(route, names, live)
    return names


def _by_latency(route: Route, names: list[str], live: Live) -> list[str]:
    """Unmeasured upstreams first (so each gets measured), then fastest p95.

    The SLO drops measured upstreams over it while a measured one meets it; unmeasured ones always stay.
    """
    unmeasured = [n for n in names if n not in live.ttft_p95_ms]
    measured = sorted((n for n in names if n in live.ttft_p95_ms), key=lambda n: live.ttft_p95_ms[n])
    if route.latency_slo is not None:
        slo = route.latency_slo.ttft_p95_ms
        meeting = [n for n in measured if live.ttft_p95_ms[n] <= slo]
        if meeting:
            measured = meeting
    return unmeasured + measured
