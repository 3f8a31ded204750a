"""The events of one client stream rewritten: one completion across parts, and what a stripped event held.

Only what a stream needs beyond relaying: one identity (id, created, model) for every part of a continued
answer, and the fields of a stripped usage event that the client would otherwise have seen.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from gateway.sse import joined, payload_of, split, with_data

IDENTITY = ("id", "created", "model")
NOT_CARRIED = frozenset({"id", "object", "created", "model", "choices", "usage"})
FINISH = re.compile(rb'"finish_reason"\s*:\s*"')


def identity_of(events: bytes) -> dict[str, Any]:
    """The id, created, model and system_fingerprint of the first event that has them (what the client saw)."""
    for payload in _payloads(events):
        if isinstance(payload, dict) and isinstance(payload.get("id"), str):
            types = {"id": str, "created": int, "model": str, "system_fingerprint": str}
            return {key: payload[key] for key, kind in types.items() if isinstance(payload.get(key), kind)}
    return {}


def restamp(events: bytes, identity: dict[str, Any]) -> bytes:
    """events with every chunk's id, created and model set to identity's, so two parts read as one completion."""
    stamp = {key: identity[key] for key in IDENTITY if key in identity}
    if not stamp or not events:
        return events
    out = []
    for event in split(events):
        payload = payload_of(event) if b"{" in event else None
        out.append(with_data(event, orjson.dumps({**payload, **stamp})) if isinstance(payload, dict) else event)
    return joined(out)


def carried(usage_event: dict[str, Any]) -> dict[str, Any]:
    """What a usage event held besides the usage (system_fingerprint, llama.cpp's timings...)."""
    return {key: value for key, value in usage_event.items() if key not in NOT_CARRIED and value is not None}


def carry(events: bytes, extra: dict[str, Any]) -> bytes:
    """events with extra's fields added to the last event that has a finish_reason (its own values win)."""
    if not extra:
        return events
    parts = split(events)
    for index in range(len(parts) - 1, -1, -1):
        if FINISH.search(parts[index]):
            payload = payload_of(parts[index])
            if isinstance(payload, dict):
                merged = {**payload, **{k: v for k, v in extra.items() if payload.get(k) is None}}
                parts[index] = with_data(parts[index], orjson.dumps(merged))
            break
    return joined(parts)


def _payloads(events: bytes) -> list[Any]:
    return [payload_of(e) for e in split(events) if b"{" in e]
