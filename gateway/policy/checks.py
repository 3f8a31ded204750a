"""Problems in a policy, each one line that names its place: shape errors, then cross-references."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Iterator, Sequence

from pydantic import BaseModel, ValidationError

from gateway import detectors
from gateway.policy.schema import Document


def describe_validation_error(exc: ValidationError) -> list[str]:
    """One line per pydantic error, as `place: message`."""
    return [_describe(error) for error in exc.errors(include_url=False)]


def _describe(error: object) -> str:
    assert isinstance(error, dict)
    loc = tuple(error["loc"])
    kind = error["type"]
    if kind == "extra_forbidden" and _misplaced_metrics_url(loc):
        return f"{place_of(loc)}: a metrics_url needs a capacity block: write it under capacity (capacity.metrics_url)"
    if kind == "extra_forbidden":
        return f"{place_of(loc)}: unknown key '{loc[-1]}'{_suggestion(loc, error)}"
    if kind == "missing":
        return f"{place_of(loc)}: required key is missing"
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{place_of(loc)}: {message}" if loc else message


def _misplaced_metrics_url(loc: tuple[object, ...]) -> bool:
    return len(loc) == 3 and loc[0] == "upstreams" and loc[2] == "metrics_url"


def _suggestion(loc: tuple[object, ...], error: dict[str, object]) -> str:
    known = _known_keys(loc[:-1])
    close = difflib.get_close_matches(str(loc[-1]), known, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _known_keys(parent: tuple[object, ...]) -> list[str]:
    """The keys allowed at parent, found by walking the schema along the location."""
    model: type[BaseModel] = Document
    for step in parent:
        if isinstance(step, int):
            continue
        field = model.model_fields.get(str(step))
        if field is None:
            continue
        inner = _model_in(field.annotation)
        if inner is None:
            return []
        model = inner
    return [field.alias or name for name, field in model.model_fields.items()]


def _model_in(annotation: object) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def place_of(loc: Sequence[object]) -> str:
    """A location tuple as the dotted place operators read: `tenants.acme.regions[0]`."""
    place = ""
    for step in loc:
        if isinstance(step, int):
            place += f"[{step}]"
        else:
            place += f".{step}" if place else str(step)
    return place


def cross_check(doc: Document) -> list[str]:
    """Every dangling name, unknown region and other problem the shape alone cannot catch."""
    return [*_upstream_problems(doc), *_route_problems(doc), *_class_problems(doc), *_tenant_problems(doc),
            *_rule_problems(doc), *_detector_problems(doc), *_capacity_problems(doc)]


def _missing(names: Iterable[str], known: Iterable[str], place: str, what: str) -> Iterator[str]:
    known = list(known)
    for i, name in enumerate(names):
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            yield f"{place}[{i}]: {what} '{name}' is not defined{hint}"


def _regions(doc: Document) -> set[str]:
    return {u.region for u in doc.upstreams.values() if u.region}


def _unknown_regions(regions: Iterable[str] | None, doc: Document, place: str) -> Iterator[str]:
    for i, region in enumerate(sorted(regions or ())):
        if region not in _regions(doc):
            yield f"{place}[{i}]: region '{region}' is used by no upstream"


def _upstream_problems(doc: Document) -> Iterator[str]:
    for name, upstream in doc.upstreams.items():
        if upstream.cost is not None and upstream.cost.gpu_hour_usd is not None and upstream.hosting != "self":
            yield f"upstreams.{name}.cost: gpu_hour_usd prices a self-hosted upstream; set hosting: self"
        if upstream.kind == "openai" and upstream.base_url is None:
            yield f"upstreams.{name}.base_url: required for kind openai"


def _route_problems(doc: Document) -> Iterator[str]:
    if doc.baseline is not None and doc.baseline not in doc.upstreams:
        yield f"baseline: upstream '{doc.baseline}' is not defined"
    for name, route in doc.models.items():
        if route.baseline is not None and route.baseline not in doc.upstreams:
            yield f"models.{name}.baseline: upstream '{route.baseline}' is not defined"
        yield from _missing(route.candidates, doc.upstreams, f"models.{name}.candidates", "upstream")
        if len(set(route.candidates)) != len(route.candidates):
            yield f"models.{name}.candidates: an upstream is listed twice"


def _class_problems(doc: Document) -> Iterator[str]:
    for name, data_class in doc.data_classes.items():
        yield from _unknown_regions(data_class.regions, doc, f"data_classes.{name}.regions")


def _tenant_problems(doc: Document) -> Iterator[str]:
    seen: dict[str, str] = {}
    for name, tenant in doc.tenants.items():
        place = f"tenants.{name}"
        for i, key in enumerate(tenant.keys):
            if key in seen:
                yield f"{place}.keys[{i}]: this key already belongs to tenant '{seen[key]}'"
            seen.setdefault(key, name)
        if tenant.data_class is not None and tenant.data_class not in doc.data_classes:
            yield f"{place}.data_class: data class '{tenant.data_class}' is not defined in data_classes"
        yield from _unknown_regions(tenant.regions, doc, f"{place}.regions")
        yield from _missing(tenant.models or (), doc.models, f"{place}.models", "model")
        budget = tenant.budget
        if budget is not None and budget.usd_per_day is None and budget.usd_per_month is None:
            yield f"{place}.budget: give usd_per_day, usd_per_month or both"
        if budget is not None and not isinstance(budget.when_exhausted, str):
            yield from _missing(budget.when_exhausted.route_to, doc.upstreams,
                                f"{place}.budget.when_exhausted.route_to", "upstream")
        limit = tenant.rate_limit
        if limit is not None and limit.requests_per_minute is None and limit.tokens_per_minute is None:
            yield f"{place}.rate_limit: give requests_per_minute, tokens_per_minute or both"


def _rule_problems(doc: Document) -> Iterator[str]:
    names: set[str] = set()
    for i, rule in enumerate(doc.rules):
        place = f"rules[{i}]"
        if rule.name in names:
            yield f"{place}.name: rule name '{rule.name}' is used twice"
        names.add(rule.name)
        yield from _missing(rule.prefer, doc.upstreams, f"{place}.prefer", "upstream")
        yield from _missing(rule.exclude, doc.upstreams, f"{place}.exclude", "upstream")
        yield from _missing(rule.match.route or (), doc.models, f"{place}.match.route", "model")
        yield from _missing(rule.match.tenant or (), doc.tenants, f"{place}.match.tenant", "tenant")
        yield from _missing(rule.match.data_class or (), doc.data_classes, f"{place}.match.data_class",
                            "data class")


def _detector_problems(doc: Document) -> Iterator[str]:
    for i, rule in enumerate(doc.classify.detectors):
        place = f"classify.detectors[{i}]"
        if rule.data_class not in doc.data_classes:
            yield f"{place}.class: data class '{rule.data_class}' is not defined in data_classes"
        for j, name in enumerate(rule.detect):
            if name not in detectors.BUILTIN:
                known = ", ".join(sorted(detectors.BUILTIN))
                yield f"{place}.detect[{j}]: unknown detector '{name}' (built in: {known})"
        for name, pattern in rule.regex.items():
            try:
                re.compile(pattern)
            except re.error as exc:
                yield f"{place}.regex.{name}: bad regular expression: {exc}"
        if not rule.detect and not rule.regex:
            yield f"{place}: give `detect` or `regex`"


def _capacity_problems(doc: Document) -> Iterator[str]:
    for name, upstream in doc.upstreams.items():
        capacity, place = upstream.capacity, f"upstreams.{name}.capacity"
        if capacity is None:
            continue
        if capacity.max_waiting is None and capacity.max_kv_cache is None:
            yield f"{place}: give max_waiting, max_kv_cache or both (when the engine counts as full)"
        if capacity.max_kv_cache is not None and capacity.engine == "llamacpp":
            yield f"{place}.max_kv_cache: llama.cpp reports no KV cache use; use max_waiting"
        if capacity.stale_ms <= capacity.poll_ms:
            yield f"{place}.stale_ms: must be longer than poll_ms ({capacity.poll_ms}), or every reading is stale"
        if capacity.metrics_url is None and upstream.base_url is None:
            yield f"{place}.metrics_url: required when the upstream has no base_url to take the origin from"
