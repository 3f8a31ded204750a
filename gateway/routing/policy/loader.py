"""Read a policy file or folder: YAML -> merged document -> validated, immutable `Policy`."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
import yaml
from pydantic import ValidationError

from gateway.errors import PolicyError
from gateway.routing.policy.checks import Defined, cross_check, describe_validation_error, partial_document
from gateway.routing.policy.model import Catalog, OpenAIOnly, Policy, Price
from gateway.routing.policy.schema import Document

VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}")
MAPPING_SECTIONS = ("upstreams", "models", "tenants", "data_classes")
LIST_SECTIONS = ("rules",)
MAX_FILE_BYTES = 1024 * 1024
MAX_NODES = 200_000  # values in a file once its aliases are expanded: a YAML bomb expands to billions


def policy_files(path: Path) -> list[Path]:
    """The YAML files a policy path stands for: the file itself, or a folder's files in name order."""
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    return [path]


def load_policy(path: str | Path, environ: Mapping[str, str] | None = None, catalog: Catalog | None = None) -> Policy:
    """Load, merge, interpolate and validate the policy at path; PolicyError lists every problem.

    catalog says which upstream kinds exist beyond `openai` and prices upstreams without a `cost`.
    """
    files = policy_files(Path(path))
    if not files:
        raise PolicyError([f"{path}: no policy files (*.yaml) found"])
    merged, origins = merge_files(files)
    digest = hashlib.sha256(orjson.dumps(merged, option=orjson.OPT_SORT_KEYS)).hexdigest()[:12]
    unset: list[str] = []
    resolved = interpolate(merged, os.environ if environ is None else environ, "", unset)
    document, shape = _validate(resolved)
    problems = _fresh([*unset], shape)  # an unset variable's "" is not a second problem at its place
    prices: dict[str, Price] = {}
    if document is not None:
        prices, price_problems = resolve_prices(document, catalog or OpenAIOnly())
        problems = _fresh(problems, [*cross_check(document, Defined.of(document, resolved)), *price_problems])
    if problems or document is None:
        raise PolicyError([_located(p, origins) for p in problems])
    return Policy.build(document, digest, str(path), prices)


def _fresh(problems: list[str], more: list[str]) -> list[str]:
    """problems plus those of more at a place none of problems is at (a part left out is not missing too)."""
    places = {p.split(":", 1)[0] for p in problems}
    return [*problems, *(p for p in more if p.split(":", 1)[0] not in places)]


def _validate(resolved: dict[str, Any]) -> tuple[Document | None, list[str]]:
    """The validated document and no problems; else its shape problems and the parts that did validate."""
    try:
        return Document.model_validate(resolved), []
    except ValidationError as exc:
        return partial_document(resolved, exc), describe_validation_error(exc)


def resolve_prices(doc: Document, catalog: Catalog) -> tuple[dict[str, Price], list[str]]:
    """Prices of upstreams with no `cost`, from the catalog; a problem for each kind or price it lacks."""
    prices: dict[str, Price] = {}
    problems: list[str] = []
    for name, upstream in doc.upstreams.items():
        if not catalog.knows(upstream.kind):
            problems.append(f"upstreams.{name}.kind: unknown upstream kind '{upstream.kind}' (openai; other providers "
                            "need litellm: pip install 'switchyard[litellm]')")
            continue
        if upstream.cost is None:
            found = catalog.price(upstream.kind, upstream.model)
            if found is None:
                problems.append(f"upstreams.{name}.cost: no price in the policy and none in litellm's price map for "
                                f"'{upstream.model}'; give cost (an upstream without a price would look free)")
            else:
                prices[name] = found
    return prices, problems


def merge_files(files: list[Path]) -> tuple[dict[str, Any], dict[str, str]]:
    """Merge several files' sections into one document, remembering which file holds each place."""
    merged: dict[str, Any] = {}
    origins: dict[str, str] = {}
    problems: list[str] = []
    for file in files:
        for place, value in _read(file, problems).items():
            _merge_section(merged, origins, place, value, str(file), problems)
    if problems:
        raise PolicyError(problems)
    return merged, origins


def _read(file: Path, problems: list[str]) -> dict[str, Any]:
    try:
        with file.open("rb") as opened:
            raw = opened.read(MAX_FILE_BYTES + 1)
        if len(raw) > MAX_FILE_BYTES:
            problems.append(f"{file}: over {MAX_FILE_BYTES // 1024} KiB, too big for a policy file")
            return {}
        data = load_yaml(raw.decode("utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(f"{file}: cannot read: {exc}")
        return {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        problems.append(f"{file}{where}: not valid YAML: {getattr(exc, 'problem', None) or exc}")
        return {}
    except ValueError as exc:
        problems.append(f"{file}: {exc}")
        return {}
    if data is None:
        return {}
    if not isinstance(data, dict):
        problems.append(f"{file}: a policy file must be a mapping of sections")
        return {}
    return data


def load_yaml(text: str) -> Any:
    """One YAML document, safely; ValueError when its aliases expand it past MAX_NODES values."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        expanded = _expanded_size(node, MAX_NODES)
        if expanded > MAX_NODES:
            raise ValueError(f"its aliases expand it to more than {MAX_NODES:,} values (a YAML alias bomb?); "
                             "write the values out or use fewer nested aliases")
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _expanded_size(root: yaml.Node, limit: int) -> int:
    """How many nodes root holds with every alias expanded, counting no further than just past limit."""
    count, stack = 0, [root]
    while stack and count <= limit:
        node = stack.pop()
        count += 1
        if isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                stack.extend((key, value))
    return count


def _merge_section(merged: dict[str, Any], origins: dict[str, str], section: str, value: Any, file: str,
                   problems: list[str]) -> None:
    if section in MAPPING_SECTIONS and isinstance(value, dict):
        target = merged.setdefault(section, {})
        for name, item in value.items():
            if name in target:
                problems.append(f"{file}: {section}.{name}: defined twice (also in {origins[f'{section}.{name}']})")
                continue
            target[name] = item
            origins[f"{section}.{name}"] = file
    elif section in LIST_SECTIONS and isinstance(value, list):
        target_list = merged.setdefault(section, [])
        for item in value:
            origins[f"{section}[{len(target_list)}]"] = file
            target_list.append(item)
    elif section == "version" and merged.get("version", value) == value:
        merged[section] = value
        origins.setdefault(section, file)
    elif section in merged:
        problems.append(f"{file}: {section}: defined twice (also in {origins[section]})")
    else:
        merged[section] = value
        origins[section] = file


def interpolate(value: Any, environ: Mapping[str, str], place: str, problems: list[str]) -> Any:
    """Replace ${VAR} and ${VAR:-default} in every string of value; an unset VAR is a problem."""
    if isinstance(value, str):
        return VARIABLE.sub(lambda m: _variable(m, environ, place, problems), value)
    if isinstance(value, dict):
        return {k: interpolate(v, environ, _join(place, str(k)), problems) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, environ, f"{place}[{i}]", problems) for i, v in enumerate(value)]
    return value


def _variable(match: re.Match[str], environ: Mapping[str, str], place: str, problems: list[str]) -> str:
    name, has_default, default = match.group(1), match.group(2), match.group(3)
    if name in environ:
        return environ[name]
    if has_default is not None:
        return default or ""
    problems.append(f"{place}: environment variable {name} is not set (write ${{{name}:-}} to allow it unset)")
    return ""


def _join(place: str, key: str) -> str:
    return f"{place}.{key}" if place else key


def _located(problem: str, origins: Mapping[str, str]) -> str:
    """Prefix a problem with the file that holds its place, when the place came from a known file."""
    place = problem.split(":", 1)[0]
    parts = place.split(".")
    for depth in (2, 1):
        key = ".".join(parts[:depth]).split("[")[0] if depth == 1 else _list_key(parts)
        if key in origins:
            return f"{origins[key]}: {problem}"
    return problem


def _list_key(parts: list[str]) -> str:
    head = parts[0]
    if "[" in head:
        return head[: head.index("]") + 1]
    return ".".join(parts[:2])
