"""Searches of what a client received for a provider key it must never see, in any of its cheaply found forms."""

from __future__ import annotations

import base64


def leaks(received: bytes, key: str) -> list[str]:
    """The cheaply searchable forms of key's first 8 characters that received still holds."""
    found = []
    start = key[:8].encode()
    lowered = received.lower()
    if start.lower() in lowered:
        found.append("prefix, any case")
    runs = {key[at:at + 15].lower().encode() for at in range(1, len(key) - 14)}
    if any(run in lowered for run in runs):
        found.append("a run of 15 from inside the key, any case")
    decoded = received.decode("unicode_escape", "replace").lower()
    if start.decode().lower() in decoded:
        found.append("prefix, once escapes are undone")
    for offset in range(3):
        core = base64.b64encode(b"\0" * offset + key.encode())[4 if offset else 0:][:10]
        if core in received:
            found.append(f"base64 at offset {offset}")
    return found


def longest_run(text: str, key: str) -> int:
    """The most characters of key, in a row, that text holds."""
    return max((n for at in range(len(key)) for n in range(1, len(key) - at + 1) if key[at:at + n] in text),
               default=0)
