"""One text as the numeric detectors see it: normalised, its shape, and the regions and clusters of digits in it.

Each view is computed at most once however many detectors look at the text (gateway/routing/detectors.py), and every
one in time linear in the text: candidates are found by regex passes whose matches are bounded in length, and the
number of candidates a detector checks in Python is capped by the text's length (`looks`). A text with more than
that is `crowded`, which the detectors count as a hit (fail closed).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from typing import cast

from gateway.routing import windowed
from gateway.routing.normalise import normalised

# Numeric detectors never run a regex over the whole text: a per-character scan of 4 KB costs more than the latency
# budget. They work on a "shape" of the text instead (one byte per character: digits become b"0", ASCII letters b"a",
# anything non-ASCII b"?"), where one pass with a literal-prefixed pattern, which the regex engine finds with a fast
# prefix search, picks out the few clusters of six or more digits. Each detector then runs its own pattern only
# around those clusters, and checks the rare structural matches in Python against the real text.
_SHAPE_TABLE = bytes.maketrans(
    b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
    b"0" * 10 + b"a" * 52,
)
# How many candidates one detector checks in a text (clusters of digits, matches, "@" signs): enough for ordinary
# text, bounded for a crafted one. Each costs a few microseconds, so this bounds a detector's time per MB.
_LOOKS_BASE = 1024
_CHARS_PER_LOOK = 1024

# A run of more digits than any detected number has (an IBAN holds at most 30) is shaped b"9": no pattern looks at it,
# so a megabyte of digits costs one pass instead of a failed match at every position.
_LONG_RUN = re.compile(rb"0{35,}+")
_LONG_RUN_START = b"0" * 35
# Every cluster (below) and card number (detectors._CARD_SHAPE) starts with two digits in a row and lies within a
# stretch of six or more digits and the separators that may split them (what the stretch table makes b"0"). A big text
# is read a chunk at a time for them, and a chunk where none starts (a search for b"00", then one of the stretch
# table's view) is passed over: text of escapes ("\\u0041") or of hex ids costs a translate and a search, where each
# digit of it was a failed match.
_STRETCH_TABLE = bytes(ord("0") if byte in b"0\t\n\r ./()-" else ord("x") for byte in range(256))
_STRETCH = b"0" * 6
_CHUNK = 1 << 14
_PEEK = 1024
# Each pair of digits in a row may start a try of the patterns below (about 70 ns at worst, a date or "123456,"), so a
# text past one window with more pairs than _PAIRS_BASE and one per _CHARS_PER_PAIR characters (megabytes of dates or
# of numbers with nothing else: a data dump, not prose) is not searched but taken as crowded, a hit (fail closed).
_PAIRS_BASE = 1 << 18
_CHARS_PER_PAIR = 8

_DIGIT = ord("0")

# A cluster holds six or more digits (at most about 120 characters: a longer run is several clusters) and never
# starts inside a date (2024-03-15), a dotted IPv4 address, a decimal fraction or another dashed or dotted number.
# Tabs, line breaks and "/" may split its digits as well, for card numbers. It is named for what makes it worth a
# look: letters or a "+" right before it ("letter", "plus"), separators between its digits ("split"), or enough
# digits in a row for a card number ("long"). A plain run of six to twelve digits, the commonest number in data and
# code, is none of the things detected.
# (Every run of digits starts a try of it, so the commonest rejection comes first: a date; and the four digits after
# the first two are looked for written out, as a repeated group costs the regex engine more than the rest of a try.)
_CLUSTER_SHAPE = re.compile(
    rb"00(?<!000)(?<!00[.-]00)(?!00-00-00)(?=0000|" + rb"[\t\n\r ./()-]{0,2}0" * 4 + rb")"
    rb"(?!0?\.0{1,3}\.0{1,3}\.0{1,3}(?!0)|0{0,3}\.0{4})"
    rb"(?:(?P<letter>(?<=a00)(?:[\t\n\r ./()-]{0,2}0){0,40}+)|(?P<plus>(?<=\+00)(?:[\t\n\r ./()-]{0,2}0){0,40}+)"
    rb"|(?P<split>0{0,40}+[\t\n\r ./()-]{1,2}0(?:[\t\n\r ./()-]{0,2}0){0,40}+)|(?P<long>0{11,40}+))"
)
# A text past one window is read for clusters and card numbers in a view of its shape where the first digit of each
# run is b"D" and the others b"d" (ASCII letters are b"%" and everything the two patterns do not tell apart b"?"): a try
# then starts only at a run's first digits, where on the shape every digit of a run starts a failed one (most of the
# time on a text dense with digits). bytes.title() marks the run starts: a cased byte after an uncased one. The cluster
# pattern below is the shape's, written for this view (detectors._CARD_RUNS is the card pattern's); a test checks
# they find the same.
# The cluster pattern also turns away, in a lookahead it already has, a run of at most twelve digits with no letter or
# "+" before it and no separator after it (none of its kinds can match there): the commonest number in data, "123456,",
# then costs one failed lookahead.
# The view costs a translate and a title() of the shape: worth it where runs of digits are long, in a text with more
# than one run of four digits (not overlapping) in this many characters.
_RUNS_DENSITY = 32
_RUNS_LOOKBEHIND = 8  # more than the patterns below look behind a try's start
_RUNS_TABLE = bytes(ord("d") if byte == _DIGIT else ord("%") if byte == ord("a")
                    else byte if byte in b"\t\n\r ./()-+_$#@" else ord("?") for byte in range(256))
_CLUSTER_RUNS = re.compile(
    rb"Dd(?<![Dd]d[.-]Dd)(?!dd-Dd-Dd)(?=dddd|" + rb"[\t\n\r ./()-]{0,2}+[Dd]" * 4 + rb")"
    rb"(?!(?<![%+]Dd)d{0,10}+[^\t\n\r ./()\-d]|d?\.Dd{0,2}\.Dd{0,2}\.Dd{0,2}(?!d)|d{0,3}\.Dddd)"
    rb"(?:(?<=[%+]Dd)(?:(?P<letter>(?<=%Dd)(?:[\t\n\r ./()-]{0,2}[Dd]){0,40}+)"
    rb"|(?P<plus>(?:[\t\n\r ./()-]{0,2}[Dd]){0,40}+))"
    rb"|(?P<split>d{0,40}+[\t\n\r ./()-]{1,2}D(?:[\t\n\r ./()-]{0,2}[Dd]){0,40}+)|(?P<long>d{11,40}+))"
)


class TextView:
    """One text under inspection, with views computed at most once however many detectors look at it."""

    __slots__ = ("_clusters", "_filled", "_regions", "_runs", "_shape", "crowded", "looks", "raw", "text", "unread")

    def __init__(self, raw: str) -> None:
        self.raw = raw
        self.text, self.unread = normalised(raw)
        self.looks = _LOOKS_BASE + len(self.text) // _CHARS_PER_LOOK
        self.crowded = False  # set when a detector found more candidates than looks
        self._shape: bytes | None = None
        self._regions: tuple[tuple[int, int], ...] | None = None
        self._runs: bytearray | None = None
        self._filled: set[int] = set()  # the chunks of _runs filled so far
        self._clusters: tuple[tuple[int, int, str], ...] | None = None

    @property
    def shape(self) -> bytes:
        """The text with digits as b"0", ASCII letters as b"a" and other non-ASCII characters as b"?"."""
        if self._shape is None:
            shape = self.text.encode("ascii", "replace").translate(_SHAPE_TABLE)
            if shape.find(_LONG_RUN_START) >= 0:  # not `in`: bytes.__contains__ tries an int first
                shape = _LONG_RUN.sub(_blank_run, shape)
            self._shape = shape
        return self._shape

    @property
    def regions(self) -> tuple[tuple[int, int], ...]:
        """Start and end of each run of chunks of the shape that a cluster or a card number may start in."""
        if self._regions is None:
            shape = self.shape
            if len(shape) > windowed.WINDOW and shape.count(b"00") > _PAIRS_BASE + len(shape) // _CHARS_PER_PAIR:
                self.crowded = True
                self._regions = ()
            else:
                self._regions = _regions(shape)
        return self._regions

    def region_matches(self, pattern: re.Pattern[bytes], on_runs: re.Pattern[bytes] | None = None
                       ) -> Iterator[re.Match[bytes]]:
        """The matches of a shape pattern that starts with two digits, region by region: those of one pass. Past one
        window, on_runs (the same pattern written for the runs view) is read over that view in its place when the
        text's runs of digits are long and many (for fewer the view costs more than it saves)."""
        shape = self.shape
        if len(shape) <= windowed.WINDOW + windowed.REACH:  # read whole, as one window
            return pattern.finditer(shape)
        if self._runs is None:  # empty for a text too sparse in digits for the view to pay
            dense = bool(self.regions) and shape.count(b"0000") * _RUNS_DENSITY > len(shape)
            self._runs = bytearray(len(shape) if dense else 0)
        view, fill = shape, None
        if on_runs is not None and self._runs:
            view, pattern, fill = cast(bytes, self._runs), on_runs, self._fill_runs  # re reads any buffer
        return itertools.chain.from_iterable(windowed.finditer(pattern, view, start, end + windowed.REACH, fill)
                                             for start, end in self.regions)

    def _fill_runs(self, start: int, end: int) -> None:
        """Fill the chunks of the runs view that a search of [start, end) reads (its lookbehinds included)."""
        assert self._runs is not None
        shape, runs = self.shape, self._runs
        for chunk in range(max(start - _RUNS_LOOKBEHIND, 0) // _CHUNK, (end + _CHUNK - 1) // _CHUNK):
            if chunk not in self._filled:
                self._filled.add(chunk)
                low, high = chunk * _CHUNK, min((chunk + 1) * _CHUNK, len(shape))
                before = 1 if low else 0  # for title() to see whether the chunk's first digit starts a run
                runs[low:high] = shape[low - before:high].translate(_RUNS_TABLE).title()[before:]

    @property
    def clusters(self) -> tuple[tuple[int, int, str], ...]:
        """Start, end and kind of each cluster of digits in the shape."""
        if self._clusters is None:
            found: list[tuple[int, int, str]] = []
            for match in self.region_matches(_CLUSTER_SHAPE, _CLUSTER_RUNS):
                if len(found) == self.looks:
                    self.crowded = True
                    break
                found.append((*match.span(), match.lastgroup or ""))
            self._clusters = tuple(found)
        return self._clusters

    def near_clusters(
        self, pattern: re.Pattern[bytes], kinds: frozenset[str], before: int, after: int, width: int = 0
    ) -> Iterator[re.Match[bytes]]:
        """Matches of a shape pattern around clusters of the given kinds and width, from before ahead to after past;
        past looks matches it stops and sets crowded."""
        shape, left = self.shape, self.looks
        for start, end, kind in self.clusters:
            if kind in kinds and end - start >= width:
                for match in pattern.finditer(shape, max(start - before, 0), end + after):
                    left -= 1
                    if left < 0:
                        self.crowded = True
                        return
                    yield match


def _blank_run(match: re.Match[bytes]) -> bytes:
    return b"9" * len(match[0])


def _regions(shape: bytes) -> tuple[tuple[int, int], ...]:
    """The runs of chunks of shape that a cluster or a card number may start in, as (start, end)."""
    regions: list[tuple[int, int]] = []
    for start in range(0, len(shape), _CHUNK):
        end = min(start + _CHUNK, len(shape))
        if not _reached(shape, start, end):
            continue
        if regions and regions[-1][1] == start:
            regions[-1] = (regions[-1][0], end)
        else:
            regions.append((start, end))
    return tuple(regions)


def _reached(shape: bytes, start: int, end: int) -> bool:
    """True when two digits in a row start in shape[start:end] and a stretch of digits and separators reaches in."""
    digit = shape.find(b"0", start, end)  # a memchr, where b"00" is a slower search
    if digit < 0 or shape.find(b"00", digit, end + 1) < 0:
        return False
    low, high = max(start - len(_STRETCH) + 1, 0), end + len(_STRETCH) - 1
    peek = min(low + _PEEK, high)  # ordinary text has a stretch in its first _PEEK characters: no more translated
    return (_STRETCH in shape[low:peek].translate(_STRETCH_TABLE)
            or _STRETCH in shape[peek - len(_STRETCH) + 1:high].translate(_STRETCH_TABLE))
