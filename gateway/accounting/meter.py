"""The completion tokens a stream relayed, estimated from its text, for a part that ends before its usage event.

One token per 4 bytes of each text (a delta's content, reasoning, tool call arguments), and at least one per
text: never one per event, since a lagging server merges several tokens into one event. The hot path only
keeps the events; the first 64 KiB of a part are read exactly when the count is asked for, and later ones
are kept as counts of bytes and reads only, their text estimated from what a read held besides text in the
first window.
"""

from __future__ import annotations

import math

BYTES_PER_TOKEN = 4
WINDOW_BYTES = 64 * 1024
BACKSLASH, QUOTE, SPACE = 0x5C, 0x22, 0x20
# where each endpoint's events carry generated text: chat content (and reasoning_content), reasoning and tool call
# arguments; completions text; the Responses API's deltas
TEXT_KEYS = {
    "/chat/completions": (b'content":', b'reasoning":', b'arguments":'),
    "/completions": (b'text":',),
    "/responses": (b'delta":',),
}


class TextMeter:
    """Counts the completion tokens of the text one stream part relayed."""

    __slots__ = ("_first", "_first_reads", "_keys", "_rest_bytes", "_rest_reads", "_size", "_window")

    def __init__(self, keys: tuple[bytes, ...]) -> None:
        self._keys = keys
        self._window: list[bytes] = []  # each entry the events of one read (mostly one event)
        self._size = 0
        self._first: bytes | None = None  # the first window, read exactly when the count is asked for
        self._first_reads = self._rest_bytes = self._rest_reads = 0

    def add(self, events: bytes) -> None:
        """Keep the complete events of one read to count."""
        self._window.append(events)
        self._size += len(events)
        if self._size > WINDOW_BYTES:
            self._close_window()

    @property
    def tokens(self) -> int:
        """The estimated completion tokens of every event added."""
        if self._window:
            self._close_window()
        if self._first is None:
            return 0
        tokens, text_bytes = read_texts(self._first, self._keys)
        if not self._rest_bytes:
            return tokens
        overhead = (len(self._first) - text_bytes) / self._first_reads  # what a read holds besides its text
        rest_text = max(0.0, self._rest_bytes - overhead * self._rest_reads)
        return tokens + max(self._rest_reads, math.ceil(rest_text / BYTES_PER_TOKEN))

    def _close_window(self) -> None:
        if self._first is None:
            self._first, self._first_reads = b"".join(self._window), len(self._window)
        else:  # only counted: no pass over its bytes on the hot path
            self._rest_bytes += self._size
            self._rest_reads += len(self._window)
        self._window, self._size = [], 0


def read_texts(events: bytes, keys: tuple[bytes, ...]) -> tuple[int, int]:
    """The tokens and the bytes of every text under keys in events."""
    tokens = text_bytes = 0
    for key in keys:
        for length in _text_lengths(events, key):
            tokens += -(-length // BYTES_PER_TOKEN)
            text_bytes += length
    return tokens, text_bytes


def _text_lengths(events: bytes, key: bytes) -> list[int]:
    """The byte length of each JSON string that follows key (a value that is no string is skipped)."""
    lengths, size, find = [], len(events), events.find
    at = find(key)
    while at >= 0:
        start = at + len(key)
        while start < size and events[start] == SPACE:
            start += 1
        if start >= size or events[start] != QUOTE:  # an object, a list or null
            at = find(key, start)
            continue
        end = find(b'"', start + 1)
        while end > 0 and _escaped(events, end):
            end = find(b'"', end + 1)
        if end < 0:
            break
        lengths.append(end - start - 1)
        at = find(key, end)
    return lengths


def _escaped(data: bytes, at: int) -> bool:
    """Whether the quote at `at` is escaped (an odd number of backslashes before it)."""
    slashes = 0
    while data[at - 1 - slashes] == BACKSLASH:
        slashes += 1
    return slashes % 2 == 1
