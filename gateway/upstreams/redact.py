"""Cut an upstream's own key out of what it sends back, in every form that is cheap to search for.

One Redactor per upstream, made when the policy loads: it holds needles derived from the key (the key
as is, lower and upper case, base64 at each of the three alignments, hex) and looks for the first
few characters of each, so that a prefix of the key is found too, and (as is and in either case) for
the key's tails at every few characters, so that a run from inside the key is found too. A body is
only rewritten on a hit; the common case costs a few substring scans. When a JSON body (or an SSE data
line) holds a `\\u00` escape, it is read and written again without escapes before looking, so an escaped
key is found too.
"""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import orjson

from gateway.sse import EVENT_END, FIELDS, data_of, with_data

if TYPE_CHECKING:
    from gateway.upstreams.base import Client, Exchange

REDACTED = b"[redacted]"
PREFIX_CHARS = 8  # this much of the key (or of its form) found anywhere counts as the key leaking
TEXT_PREFIX = 64 << 10
ESCAPED = re.compile(rb"\\u00(2[dD]|3[0-9]|4[1-9a-fA-F]|5[0-9aAfF]|6[1-9a-fA-F]|7[0-9aA])")


def _unescaped(data: bytes) -> bytes | None:
    """data (a JSON body, SSE events' data, or text) with its escapes written out plainly, or None.

    orjson reads and writes JSON again in C, at a linear cost, so a body full of escapes is no slower than
    any other; a text body's escapes are undone by a pattern, in its first TEXT_PREFIX bytes only.
    """
    try:
        return orjson.dumps(orjson.loads(data))
    except orjson.JSONDecodeError:
        pass
    if not data.startswith(FIELDS):  # text, HTML: escapes of key characters undone in a bounded prefix
        plain = ESCAPED.sub(lambda found: bytes((int(found.group(1), 16),)), data[:TEXT_PREFIX])
        return plain + data[TEXT_PREFIX:]
    events = data.split(EVENT_END)
    changed = False
    for index, event in enumerate(events):
        value = data_of(event) if b"\\u00" in event else None
        if value is None:
            continue
        try:
            events[index] = with_data(event, orjson.dumps(orjson.loads(value)))
        except orjson.JSONDecodeError:
            continue
        changed = True
    return EVENT_END.join(events) if changed else None


def _base64_cores(key: bytes) -> list[bytes]:
    """The base64 text the key turns into inside any longer text, whatever its offset there."""
    cores = []
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + key)
        start = 4 if offset else 0  # the first group mixes in bytes before the key
        end = len(encoded) - (0 if (offset + len(key)) % 3 == 0 else 4)  # the last group mixes in bytes after it
        cores.append(encoded[start:end])
    return cores


def forms(key: str) -> list[tuple[bytes, int]]:
    """Every form of key that is searched for, each with how much of its start counts as a hit."""
    raw = key.encode()
    found = [(raw, PREFIX_CHARS), (raw.lower(), PREFIX_CHARS), (raw.upper(), PREFIX_CHARS)]
    for core in _base64_cores(raw):
        found += [(core, PREFIX_CHARS * 4 // 3), (core.replace(b"+", b"-").replace(b"/", b"_"), PREFIX_CHARS * 4 // 3)]
    found += [(raw.hex().encode(), PREFIX_CHARS * 2), (raw.hex().upper().encode(), PREFIX_CHARS * 2)]
    unique: list[tuple[bytes, int]] = []
    for form, prefix in found:
        if form and all(form != seen for seen, _ in unique):
            unique.append((form, min(prefix, len(form))))
    return unique


def windows(key: str) -> list[tuple[bytes, int]]:
    """The key's tails at every PREFIX_CHARS-th offset, in each case: a needle for any long run inside the key.

    A run of 2 * PREFIX_CHARS - 1 characters of the key, from anywhere in it (the key less its first few
    characters is as good as the key), holds one of these tails' first PREFIX_CHARS characters.
    """
    found: list[tuple[bytes, int]] = []
    for form in dict.fromkeys((key.encode(), key.lower().encode(), key.upper().encode())):
        found += [(form[start:], PREFIX_CHARS) for start in range(PREFIX_CHARS, len(form) - PREFIX_CHARS + 1,
                                                                   PREFIX_CHARS)]
    return found


class Redactor:
    """Finds and cuts one key's forms out of bytes; a key-less upstream's redactor passes everything as is."""

    __slots__ = ("_key", "_needles", "_runs")

    def __init__(self, key: str | None) -> None:
        self._key = key.encode() if key and len(key) >= PREFIX_CHARS else None
        found = forms(key) + windows(key) if key else []  # the starts first: each cut runs to its form's end
        self._needles = tuple(dict.fromkeys(form[:prefix] for form, prefix in found))
        self._runs = tuple((form[:prefix], _run(form, form[:prefix])) for form, prefix in found)

    def hit(self, data: bytes) -> bool:
        """Whether data holds the start of any form of the key (escaped forms not looked at)."""
        for needle in self._needles:  # noqa: SIM110 - a plain loop is faster, and this runs on every piece
            if needle in data:
                return True
        return False

    def __call__(self, data: bytes) -> bytes:
        """data with every form of the key replaced by [redacted]; the same object when there is none."""
        if not self._needles:
            return data
        if b"\\u00" in data:  # escapes first: a cut of the plain part could leave an escaped start behind
            plain = _unescaped(data)
            if plain is not None and self.hit(plain):
                return self._cut(plain)
        if self.hit(data):
            return self._cut(data)
        return data

    def stream(self) -> Spelled | None:
        """A cutter of the key spelled out across one stream's events; None for a key-less upstream."""
        return Spelled(self._key) if self._key else None

    def text(self, value: str) -> str:
        """The same, for text."""
        return self(value.encode()).decode("utf-8", "replace") if self._needles else value

    def _cut(self, data: bytes) -> bytes:
        """Only on a hit: each form's runs replaced, in C, however often the upstream repeats them."""
        for needle, run in self._runs:
            if needle in data:
                data = run.sub(REDACTED, data)
        return data


def _run(form: bytes, needle: bytes) -> re.Pattern[bytes]:
    """needle, then as much more of form as follows it: a literal pattern, linear, compiled once per policy."""
    pattern = b""
    for byte in reversed(form[len(needle):]):
        pattern = b"(?:" + re.escape(bytes((byte,))) + pattern + b")?"
    return re.compile(re.escape(needle) + pattern)


STREAM_TEXT = re.compile(rb'"(?:content|text|delta|arguments|refusal)":\s*"((?:[^"\\]|\\.)*)"')


class Spelled:
    """Cuts the key out of one stream when the upstream spells it out across events, a few characters each.

    Each event's text is read after the text before it (the last len(key) characters of it are kept); a run of
    PREFIX_CHARS or more characters of the key that goes on from one event's text into the next is cut from
    the next, and so on, so a client joining the deltas gets fewer than PREFIX_CHARS of the key in a row. The
    key as is only: its case and encoded forms are found within one event (`Redactor`), not across events.
    """

    __slots__ = ("_key", "_tail")

    def __init__(self, key: bytes) -> None:
        self._key = key
        self._tail = b""

    def __call__(self, piece: bytes) -> bytes:
        """piece with the key's characters that continue a run across events taken out of its texts."""
        out: list[bytes] = []
        done = 0
        for found in STREAM_TEXT.finditer(piece):
            text = found.group(1)
            span = self._span(text)
            self._tail = (self._tail + text)[-len(self._key):]
            if span is not None:
                start = found.start(1)
                out += [piece[done:start + span[0]], REDACTED]
                done = start + span[1]
        return b"".join([*out, piece[done:]]) if out else piece

    def _span(self, text: bytes) -> tuple[int, int] | None:
        """The start of text that continues a run of the key begun before it, when the run is long enough."""
        tail, key = self._tail, self._key
        if not tail or not text:
            return None
        first, longest = text[:1], 0
        at = key.find(first)
        while at >= 0:  # each place in the key text's first character is at (one, for most keys)
            back = 0
            while back < at and back < len(tail) and tail[-1 - back] == key[at - 1 - back]:
                back += 1
            ahead = 0
            while back and at + ahead < len(key) and ahead < len(text) and text[ahead] == key[at + ahead]:
                ahead += 1
            if back + ahead >= PREFIX_CHARS:
                longest = max(longest, ahead)
            at = key.find(first, at + 1)
        return (0, longest) if longest else None


class Redacting:
    """An exchange whose bytes pass through a redactor, for adapters that do not redact themselves.

    Such adapters (the litellm one) hand on whole events, one per chunk, so a key is never split across two.
    """

    redacted = True

    def __init__(self, inner: Exchange, redact: Redactor) -> None:
        self._inner = inner
        self._redact = redact
        self.upstream = inner.upstream
        self.status = inner.status
        self.content_type = inner.content_type

    async def read(self) -> bytes:
        """The whole body, redacted."""
        return self._redact(await self._inner.read())

    async def chunks(self) -> AsyncIterator[bytes]:
        """Each chunk, redacted."""
        spelled = self._redact.stream()
        async for chunk in self._inner.chunks():
            yield self._redact(spelled(chunk) if spelled else chunk)  # spelled first: it reads the text as sent

    def retry_after(self) -> str | None:
        """The inner exchange's Retry-After."""
        return self._inner.retry_after()

    def close(self) -> None:
        """Close the inner exchange."""
        self._inner.close()


def scrub(body: bytes, upstream: Client) -> bytes:
    """body with every form of the upstream's key cut out: its own redactor when it has one, else a new one."""
    redact = getattr(upstream, "redact", None)
    if not isinstance(redact, Redactor):
        redact = Redactor(upstream.spec.api_key.get_secret_value() if upstream.spec.api_key is not None else None)
    return redact(body)
