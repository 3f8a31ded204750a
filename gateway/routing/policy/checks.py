"""Problems in a policy, each one line that names its place: shape errors, then cross-references."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ValidationError

from gateway.routing import detectors
from gateway.routing.policy.schema import REQUEST_FEATURES, Document

NAMED_SECTIONS = ("upstreams", "models", "tenants", "data_classes")
REQUIRED_SECTIONS = ("upstreams", "models", "tenants")
STAND_INS: Mapping[str, object] = {"upstreams": {"model": "m", "base_url": "http://m"}, "models": {"candidates": ["m"]},
                                   "tenants": {"keys": ["sha256:" + "0" * 64]}}


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


@dataclass(frozen=True)
class Defined:
    """The names a policy defines, as written: entries whose own shape is wrong still count as defined."""

    upstreams: frozenset[str]
    models: frozenset[str]
    tenants: frozenset[str]
    data_classes: frozenset[str]
    regions: frozenset[str] | None  # None: not known, as some upstream failed validation

    @classmethod
    def of(cls, doc: Document, raw: Mapping[str, Any] | None = None) -> Defined:
        """The names in doc, plus those of raw (the unvalidated document) when given."""
        raw = raw or {}
        names = {section: frozenset(getattr(doc, section)) | _keys(raw.get(section)) for section in NAMED_SECTIONS}
        regions = frozenset(u.region for u in doc.upstreams.values() if u.region)
        return cls(**names, regions=None if _pruned_upstream(doc, raw) else regions)


def _pruned_upstream(doc: Document, raw: Mapping[str, Any]) -> bool:
    """Whether some upstream of raw lost a key or itself on the way to doc: then its region is not known."""
    written = raw.get("upstreams")
    if not isinstance(written, dict):
        return bool(raw)
    return any(not isinstance(spec, dict) or name not in doc.upstreams
               or set(spec) != doc.upstreams[name].model_fields_set for name, spec in written.items())


def _keys(section: object) -> frozenset[str]:
    return frozenset(str(name) for name in section) if isinstance(section, dict) else frozenset()


def partial_document(raw: Mapping[str, Any], exc: ValidationError) -> Document | None:
    """raw without the parts that failed validation, so the rest can still be cross-checked.

    A failing key of an entry of upstreams, models, tenants or data_classes is left out, then the
    entry itself if it still fails (its name still counts as defined); a failing rule is kept as a
    bare rule under its name, so rule indexes stay; any other failing section falls back to its
    defaults. None when what is left does not validate either.
    """
    pruned: dict[str, Any] = {key: (dict(value) if isinstance(value, dict) else value) for key, value in raw.items()}
    if isinstance(pruned.get("rules"), list):
        pruned["rules"] = list(pruned["rules"])
    for error in exc.errors(include_url=False):
        _prune(pruned, tuple(error["loc"]), keys=True)
    try:
        return Document.model_validate(pruned)
    except ValidationError as again:
        for error in again.errors(include_url=False):
            _prune(pruned, tuple(error["loc"]), keys=False)
    emptied = [s for s in REQUIRED_SECTIONS if isinstance(pruned.get(s), dict) and not pruned[s]]
    for section in emptied:  # every entry failed: stand one in to validate the rest, then take it out
        pruned[section] = {"stand-in": STAND_INS[section]}
    try:
        return Document.model_validate(pruned).model_copy(update={section: {} for section in emptied})
    except ValidationError:
        return None


def _prune(doc: dict[str, Any], loc: tuple[object, ...], keys: bool) -> None:
    """Take the part at loc out of doc: with keys, only an entry's failing key where there is one."""
    section = str(loc[0]) if loc else ""
    value = doc.get(section)
    if section in NAMED_SECTIONS and len(loc) > 1 and isinstance(value, dict):
        entry = value.get(str(loc[1]))
        if keys and len(loc) > 2 and isinstance(entry, dict):
            value[str(loc[1])] = {k: v for k, v in entry.items() if k != str(loc[2])}
        else:
            value.pop(str(loc[1]), None)
    elif section == "rules" and len(loc) > 1 and isinstance(value, list) and isinstance(loc[1], int):
        rule = value[loc[1]]
        name = rule.get("name") if isinstance(rule, dict) else None
        value[loc[1]] = {"name": name if isinstance(name, str) and name else f"rule-{loc[1]}"}
    elif section == "version":
        doc["version"] = 1
    elif section and section not in REQUIRED_SECTIONS:
        doc.pop(section, None)


def cross_check(doc: Document, defined: Defined | None = None) -> list[str]:
    """Every dangling name, unknown region and other problem the shape alone cannot catch.

    defined: the names to check references against (default: those of doc).
    """
    names = defined or Defined.of(doc)
    return [*_upstream_problems(doc), *_route_problems(doc, names), *_class_problems(doc, names),
            *_tenant_problems(doc, names), *_rule_problems(doc, names), *_detector_problems(doc, names),
            *_capacity_problems(doc)]


def notes(doc: Document) -> list[str]:
    """Things worth knowing that are not problems: upstreams that list no capabilities."""
    features = ", ".join(sorted(REQUEST_FEATURES))
    return [f"upstreams.{name}: lists no capabilities, so requests needing any of {features} may go to it and "
            "its own answer decides; list `capabilities` to narrow it"
            for name, upstream in doc.upstreams.items() if not upstream.lists_capabilities]


def _missing(names: Iterable[str], known: Iterable[str], place: str, what: str) -> Iterator[str]:
    known = sorted(known)
    for i, name in enumerate(names):
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            yield f"{place}[{i}]: {what} '{name}' is not defined{hint}"


def _unknown_regions(regions: Iterable[str] | None, names: Defined, place: str) -> Iterator[str]:
    for i, region in enumerate(sorted(regions or ())):
        if names.regions is not None and region not in names.regions:
            yield f"{place}[{i}]: region '{region}' is used by no upstream"


def _upstream_problems(doc: Document) -> Iterator[str]:
    for name, upstream in doc.upstreams.items():
        if upstream.cost is not None and upstream.cost.gpu_hour_usd is not None and upstream.hosting != "self":
            yield f"upstreams.{name}.cost: gpu_hour_usd prices a self-hosted upstream; set hosting: self"
        if upstream.kind == "openai" and upstream.base_url is None:
            yield f"upstreams.{name}.base_url: required for kind openai"
        if upstream.base_url is not None and not _is_base_url(upstream.base_url):
            yield (f"upstreams.{name}.base_url: '{upstream.base_url[:80]}' is not scheme://host[:port][/path] "
                   "(printable ASCII, no query or fragment)")


def _is_base_url(url: str) -> bool:
    """Whether a URL names a host, a port (if any) that is one, and a plain path a request line can carry."""
    if not url.isascii() or not url.isprintable() or " " in url:
        return False
    try:
        parts = urlsplit(url)
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        return False
    return bool(parts.hostname) and port_ok and not parts.query and not parts.fragment and "?" not in url


def _route_problems(doc: Document, names: Defined) -> Iterator[str]:
    if doc.baseline is not None and doc.baseline not in names.upstreams:
        yield f"baseline: upstream '{doc.baseline}' is not defined"
    for name, route in doc.models.items():
        if route.baseline is not None and route.baseline not in names.upstreams:
            yield f"models.{name}.baseline: upstream '{route.baseline}' is not defined"
        yield from _missing(route.candidates, names.upstreams, f"models.{name}.candidates", "upstream")
        if len(set(route.candidates)) != len(route.candidates):
            yield f"models.{name}.candidates: an upstream is listed twice"


def _class_problems(doc: Document, names: Defined) -> Iterator[str]:
    for name, data_class in doc.data_classes.items():
        yield from _unknown_regions(data_class.regions, names, f"data_classes.{name}.regions")


def _tenant_problems(doc: Document, names: Defined) -> Iterator[str]:
    seen: dict[str, str] = {}
    for name, tenant in doc.tenants.items():
        place = f"tenants.{name}"
        for i, key in enumerate(tenant.keys):
            if key in seen:
                yield f"{place}.keys[{i}]: this key already belongs to tenant '{seen[key]}'"
            seen.setdefault(key, name)
        if tenant.data_class is not None and tenant.data_class not in names.data_classes:
            yield f"{place}.data_class: data class '{tenant.data_class}' is not defined in data_classes"
        yield from _unknown_regions(tenant.regions, names, f"{place}.regions")
        yield from _missing(tenant.models or (), names.models, f"{place}.models", "model")
        budget = tenant.budget
        if budget is not None and budget.usd_per_day is None and budget.usd_per_month is None:
            yield f"{place}.budget: give usd_per_day, usd_per_month or both"
        if budget is not None and not isinstance(budget.when_exhausted, str):
            yield from _missing(budget.when_exhausted.route_to, names.upstreams,
                                f"{place}.budget.when_exhausted.route_to", "upstream")
        limit = tenant.rate_limit
        if limit is not None and limit.requests_per_minute is None and limit.tokens_per_minute is None:
            yield f"{place}.rate_limit: give requests_per_minute, tokens_per_minute or both"


def _rule_problems(doc: Document, names: Defined) -> Iterator[str]:
    seen: set[str] = set()
    for i, rule in enumerate(doc.rules):
        place = f"rules[{i}]"
        if rule.name in seen:
            yield f"{place}.name: rule name '{rule.name}' is used twice"
        seen.add(rule.name)
        yield from _missing(rule.prefer, names.upstreams, f"{place}.prefer", "upstream")
        yield from _missing(rule.exclude, names.upstreams, f"{place}.exclude", "upstream")
        yield from _missing(rule.match.route or (), names.models, f"{place}.match.route", "model")
        yield from _missing(rule.match.tenant or (), names.tenants, f"{place}.match.tenant", "tenant")
        yield from _missing(rule.match.data_class or (), names.data_classes, f"{place}.match.data_class",
                            "data class")


def _detector_problems(doc: Document, names: Defined) -> Iterator[str]:
    unreadable = doc.classify.unreadable
    if unreadable is not None and unreadable not in names.data_classes:
        yield f"classify.unreadable: data class '{unreadable}' is not defined in data_classes"
    for i, rule in enumerate(doc.classify.detectors):
        place = f"classify.detectors[{i}]"
        if rule.data_class not in names.data_classes:
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
