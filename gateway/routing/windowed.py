"""Regex passes over a big text, a window at a time: the same matches as one pass, and no C call that runs long."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import AnyStr

# The passes over a whole text go a window at a time, so that no one C call holds the interpreter (and a worker
# thread's GIL) for long on a big body; each window reaches on past its end by more than any match and its lookahead
# span (an address's domain longer than that is read as far as the window reaches).
WINDOW = 1 << 16
REACH = 4096


def finditer(pattern: re.Pattern[AnyStr], text: AnyStr, start: int = 0, end: int | None = None
             ) -> Iterator[re.Match[AnyStr]]:
    """pattern.finditer(text, start, end) a window at a time: the same matches for a pattern spanning under REACH."""
    end = len(text) if end is None else min(end, len(text))
    if end - start <= WINDOW + REACH:
        return pattern.finditer(text, start, end)
    return _windows(pattern, text, start, end)


def _windows(pattern: re.Pattern[AnyStr], text: AnyStr, start: int, end: int) -> Iterator[re.Match[AnyStr]]:
    """The matches of pattern in text[start:end], a window at a time."""
    at = start
    while at < end:
        stop = resume = at + WINDOW
        for match in pattern.finditer(text, at, min(stop + REACH, end)):
            if match.start() >= stop:
                break
            yield match
            resume = max(stop, match.end())
        at = resume
