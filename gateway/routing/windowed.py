"""Regex passes over a big text, a window at a time: the same matches as one pass, and no C call that runs long."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import AnyStr

# The passes over a whole text go a window at a time, so that no one C call holds the interpreter (and a worker
# thread's GIL) for long on a big body; each window reaches on past its end by more than any match and its lookahead
# span (an address's domain longer than that is read as far as the window reaches).
WINDOW = 1 << 16
REACH = 4096


Prepare = Callable[[int, int], None]


def finditer(pattern: re.Pattern[AnyStr], text: AnyStr, start: int = 0, end: int | None = None,
             prepare: Prepare | None = None) -> Iterator[re.Match[AnyStr]]:
    """pattern.finditer(text, start, end) a window at a time: the same matches for a pattern spanning under REACH.
    prepare, when given, is called with each window's bounds just before it is searched (to fill a view of text)."""
    end = len(text) if end is None else min(end, len(text))
    if end - start <= WINDOW + REACH:
        if prepare is not None:
            prepare(start, end)
        return pattern.finditer(text, start, end)
    return _windows(pattern, text, start, end, prepare)


def _windows(pattern: re.Pattern[AnyStr], text: AnyStr, start: int, end: int, prepare: Prepare | None
             ) -> Iterator[re.Match[AnyStr]]:
    """The matches of pattern in text[start:end], a window at a time."""
    at = start
    while at < end:
        stop = resume = at + WINDOW
        if prepare is not None:
            prepare(at, min(stop + REACH, end))
        for match in pattern.finditer(text, at, min(stop + REACH, end)):
            if match.start() >= stop:
                break
            yield match
            resume = max(stop, match.end())
        at = resume
