"""Content detectors that decide whether chat text contains personal data.

Each looks at the text as `gateway.routing.normalise` makes it (percent-escapes decoded, Unicode folded), and every
one runs in time linear in its input: candidates are found by regex passes whose matches are bounded in length,
and the number of candidates a detector checks in Python is capped by the text's length. A text with more candidates
than that counts as a hit (fail closed): padding a body with decoys cannot hide what follows them.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import cast

from gateway.routing import windowed
from gateway.routing.normalise import normalised
from gateway.routing.number_checks import card_number_ok, iban_ok

__all__ = ["BUILTIN", "Detector", "builtin", "regex", "scan"]

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
_AT_SIGNS_PER_LOOK = 4

# A run of more digits than any detected number has (an IBAN holds at most 30) is shaped b"9": no pattern looks at it,
# so a megabyte of digits costs one pass instead of a failed match at every position.
_LONG_RUN = re.compile(rb"0{35,}+")
_LONG_RUN_START = b"0" * 35
# Every cluster and card number below starts with two digits in a row and lies within a stretch of six or more digits
# and the separators that may split them (what the stretch table makes b"0"). A big text is read a chunk at a time for
# them, and a chunk where none starts (a search for b"00", then one of the stretch table's view) is passed over: text
# of escapes ("\\u0041") or of hex ids costs a translate and a search, where each digit of it was a failed match.
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
_SPACE = ord(" ")
_GLUE_BEFORE = frozenset(b"0a_@#$.+-/\\")
_GLUE_AFTER = frozenset(b"0a_@")
_JOINERS = frozenset(b".-/:,")

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
_IBAN_KINDS = frozenset({"split", "letter"})
_NATIONAL_ID_KINDS = frozenset({"split", "letter"})
_PHONE_KINDS = frozenset({"split", "plus"})
# A card number starts with a group of four digits followed by one of four to six and at least one more, or is one run
# of 13 to 19 digits. The
# groups may be split by up to three of space, tab, line break, ".", "/" and "-" (every other dash and space is one of
# these once the text is normalised).
_CARD_SHAPE = re.compile(
    rb"0000(?<![0a_.$#@+]0000)(?:(?=0{9,15}+(?![0a_@]))|(?!0)(?=[\t\n\r ./-]{1,3}0{4,6}+[\t\n\r ./-]{1,3}0))"
)
# A text past one window is read for clusters and card numbers in a view of its shape where the first digit of each
# run is b"D" and the others b"d" (ASCII letters are b"%" and everything the two patterns do not tell apart b"?"): a try
# then starts only at a run's first digits, where on the shape every digit of a run starts a failed one (most of the
# time on a text dense with digits). bytes.title() marks the run starts: a cased byte after an uncased one. The two
# patterns below are the shape's two above, written for this view; a test checks they find the same.
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
_CARD_RUNS = re.compile(
    rb"Dddd(?<![%_.$#@+]Dddd)(?=dddddddddd{0,6}+(?![d%_@])|[\t\n\r ./-][\t\n\r ./-]{0,2}Dd{3,5}+[\t\n\r ./-]{1,3}D)"
)
_CARD_STRETCH = re.compile(r"[0-9]++(?:[\t\n\r ./-]{1,3}[0-9]++){0,5}")
_DIGIT_GROUP = re.compile(r"[0-9]+")
_CARD_GLUE_AFTER = frozenset(b"a_@")
# Country code, check digits and at most 30 more characters, whole or in groups of four split by spaces or dashes;
# tried at every country code (a lookahead), so a failed candidate never hides one that starts inside it.
# Written any other way ("DE89 370400440532013000", double spaces), it is read "loose": the country code and check
# digits together, then up to two separators before any character, checked at the registered length of its country.
_IBAN_SHAPE = re.compile(
    rb"(?<![0a_])(?=aa(?:00((?:[0a]{11,30}+|(?:[ -][0a]{4}){2,7}+(?:[ -][0a]{1,3})?)(?![0a_]))"
    rb"|(?P<loose>00(?:[ .-]{0,2}[0a]){11,30}+)))"
)
_IBAN_SEPARATOR = re.compile("[ -]")
_IBAN_LOOSE_SEPARATOR = re.compile("[ .-]+")
_IBAN_LENGTHS = range(15, 35)
_NATIONAL_ID_SHAPE = re.compile(
    rb"(?P<ssn>000(?P<sep>[ .-])00(?P=sep)0000)"
    rb"|00(?:(?<=aa00)(?<![0a_]aa00)|(?<=aa 00)(?<![0a_]aa 00))(?: ?00){2} ?a(?![0a_])"
)
_PHONE_SHAPE = re.compile(
    rb"(?P<plus>\+(?<![0a_+]\+)0(?:[ .-]?(?:0|\(0{1,5}\)))++(?![a_]))"
    rb"|(?P<paren>\((?<![0a_]\()0{2,5}\)(?:[ .-]?0{2,8}){1,3}+(?![0a_]))"
    rb"|00(?<![0a_]00)(?:0{0,3}+(?P<sep>[ .-])0{3,8}+(?:(?P=sep)0{3,8}+){0,3}+"
    rb"|(?P<pair>[ .-])00(?:(?P=pair)00){3}(?![0a_]|[ .-]0))"
)

_SEPARATORS = re.compile(r"[ .()+-]+")
# Letters and digits of any script: an internationalised address is personal data, and a Cyrillic letter in a domain
# must not hide one.
_EMAIL_DOMAIN = re.compile(
    r"@(?<=[\w%+-]@)(?:[^\W_](?:(?:[^\W_]|-){0,61}[^\W_])?\.)+([^\W\d_]{2,24})"
    r"(?![\w-]|\.[^\W_]|:[^\W_/~])"
)
_EMAIL_LOCAL = re.compile(
    r"(?:(?<=[Mm][Aa][Ii][Ll][Tt][Oo]:)|(?<![\w.%+/:@-]))[\w%+-](?:[\w.%+-]{0,62}[\w%+-])?\Z"
)

# Look like top-level domains after an "@" in code (`icon@2x.png`) but are file extensions, not TLDs.
_FILE_EXTENSIONS = frozenset(
    {"bmp", "css", "csv", "gif", "htm", "html", "ico", "jpeg", "jpg", "js", "json", "jsx", "lock", "png", "svg", "tif",
     "tiff", "toml", "ts", "tsx", "txt", "webp", "xml", "yaml", "yml"}
)
_NINO_BAD_PREFIXES = frozenset({"BG", "GB", "KN", "NK", "NT", "TN", "ZZ"})


class _Text:
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


@dataclass(frozen=True, slots=True)
class Detector:
    """A named test for personal data in chat text."""

    name: str
    _probe: Callable[[_Text], bool] = field(repr=False, compare=False)

    def search(self, text: str) -> bool:
        """True when this detector fires anywhere in text (or text is too dear to read: normalise.normalised)."""
        prepared = _Text(text)
        return prepared.unread or self._probe(prepared)


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


def builtin(name: str) -> Detector:
    """The built-in detector called name; KeyError if there is none."""
    return Detector(name, dict(_BUILTINS)[name])


def regex(name: str, pattern: str) -> Detector:
    """An operator-defined detector firing on a regex match; re.error on a bad pattern."""
    compiled = re.compile(pattern)

    def probe(text: _Text) -> bool:
        if compiled.search(text.raw) is not None:
            return True
        return text.text is not text.raw and compiled.search(text.text) is not None

    return Detector(name, probe)


def scan(detectors: Sequence[Detector], text: str) -> str | None:
    """Name of the first detector that fires on text, or None; the first named when text is too dear to read in
    bounded time, as normalise.normalised tells (fail closed: decoys must not hide the reference that matters)."""
    prepared = _Text(text)
    if prepared.unread and detectors:
        return detectors[0].name
    digitless: bool | None = None  # read at the first numeric detector: a group may have none
    for detector in detectors:
        if detector._probe in _NUMERIC:
            if digitless is None:
                digitless = prepared.shape.find(b"0") < 0  # most prompts: no numeric detector can fire
            if digitless:
                continue
        if detector._probe(prepared):
            return detector.name
    return None


def _standalone(shape: bytes, start: int, end: int, spaced: bool) -> bool:
    """True when shape[start:end] is not glued to a neighbouring word or run of digits."""
    if start:
        before = shape[start - 1]
        if before in _GLUE_BEFORE:
            return False
        if start > 1 and shape[start - 2] == _DIGIT and (before in _JOINERS or (spaced and before == _SPACE)):
            return False
    if end < len(shape):
        after = shape[end]
        if after in _GLUE_AFTER:
            return False
        if end + 1 < len(shape) and shape[end + 1] == _DIGIT and (after in _JOINERS or (spaced and after == _SPACE)):
            return False
    return True


def _email(text: _Text) -> bool:
    """An address like local@example.org, not a @mention, a decorator or an scp-style git remote."""
    body = text.text
    if "@" not in body:
        return False
    if body.count("@") > text.looks * _AT_SIGNS_PER_LOOK:
        return True
    for looked, match in enumerate(windowed.finditer(_EMAIL_DOMAIN, body)):
        if looked == text.looks:
            return True
        at = match.start()
        if match[1].lower() not in _FILE_EXTENSIONS and _EMAIL_LOCAL.search(body, max(at - 71, 0), at):
            return True
    return False


def _phone(text: _Text) -> bool:
    """A phone number with a country code or with the grouping people write phone numbers in."""
    shape, body = text.shape, text.text
    for match in text.near_clusters(_PHONE_SHAPE, _PHONE_KINDS, 6, 2):
        start, end = match.span()
        if match["plus"] is not None:
            found = _standalone(shape, start, end, spaced=False) and _international_ok(body[start:end])
        elif match["paren"] is not None:
            groups = _SEPARATORS.split(body[start + 1:end])
            found = _standalone(shape, start, end, spaced=False) and _national_ok(groups)
        else:
            found = _grouped_phone(shape, body, start, end, chr((match["sep"] or match["pair"])[0]))
        if found:
            return True
    return text.crowded


def _international_ok(candidate: str) -> bool:
    """True when candidate, a "+" then digits, separators and parentheses, reads as a phone number."""
    groups = _SEPARATORS.split(candidate[1:])
    digits = "".join(groups)
    if not 7 <= len(digits) <= 15 or digits[0] == "0":
        return False
    punctuation = {c for c in candidate[1:] if not c.isdigit()}
    if punctuation == {"."} and len(groups) == 2:
        return False  # a signed decimal such as a latitude
    # Otherwise it must not read as thousands grouping, "+1 000 000".
    return len(punctuation) > 1 or len(groups) < 3 or len(groups[0]) > 3 or any(len(g) != 3 for g in groups[1:])


def _grouped_phone(shape: bytes, body: str, start: int, end: int, separator: str) -> bool:
    """True when the digit groups in body[start:end], joined by separator, hold a national phone number."""
    groups = body[start:end].split(separator)
    if start > 1 and body[start - 1] == separator and body[start - 2] == "1" and len(groups) == 3:
        start -= 2  # North American trunk prefix, "1-800-555-0199"
    spaced = separator == " "
    if not _standalone(shape, start, end, spaced):
        return False
    if _national_ok(groups):
        return True
    # A spaced number may run into a following figure ("020 7946 0958 2024"), so also try shorter prefixes.
    return spaced and any(_national_ok(groups[:count]) for count in range(len(groups) - 1, 1, -1))


def _national_ok(groups: list[str]) -> bool:
    """True when digit groups form a North American number or one with a European style trunk prefix 0."""
    digits = "".join(groups)
    sizes = [len(group) for group in groups]
    if sizes == [3, 3, 4] and digits[0] in "23456789" and digits[3] in "23456789":
        return True
    if len(digits) < 9 or digits[0] != "0" or digits[1] == "0" or sizes == [5, 4]:  # [5, 4] is a US ZIP+4
        return False
    if all(size == 2 for size in sizes):
        return len(sizes) == 5
    return len(digits) <= 11 and 2 <= sizes[0] <= 5 and min(sizes[1:]) >= 3


def _credit_card(text: _Text) -> bool:
    """A 13 to 19 digit card number from a known issuer that passes the Luhn check."""
    shape, body = text.shape, text.text
    # Not only around clusters: those never start at a dotted number, and "4111.1111.1111.1111" is a card.
    for looked, match in enumerate(text.region_matches(_CARD_SHAPE, _CARD_RUNS)):
        if looked == text.looks:
            return True
        start = match.start()
        if body[start] in "23456" and _card_at(shape, body, start):
            return True
    return text.crowded


def _card_at(shape: bytes, body: str, start: int) -> bool:
    """True when the digit groups from start on hold a card number: whole, or grouped 4, then 4 to 6 digits."""
    stretch = _CARD_STRETCH.match(body, start)
    assert stretch is not None
    groups = _DIGIT_GROUP.finditer(body, start, stretch.end())
    first = next(groups)
    if len(first[0]) != 4:
        return 13 <= len(first[0]) <= 19 and card_number_ok(first[0]) and _card_ends(shape, first.end())
    digits = first[0]
    # The run may hold more than the card ("4111 1111 1111 1111 12 25"), so every length is tried.
    for group in groups:
        following = group[0]
        digits += following
        if len(digits) > 19 or len(following) > 6:
            return False
        if len(digits) >= 13 and card_number_ok(digits) and _card_ends(shape, group.end()):
            return True
        if len(following) < 4:
            return False
    return False


def _card_ends(shape: bytes, end: int) -> bool:
    """True when a card number ending at end is not glued to a following word."""
    return end == len(shape) or shape[end] not in _CARD_GLUE_AFTER


def _iban(text: _Text) -> bool:
    """An IBAN of the registered length for its country with valid mod-97 check digits, spaced or not."""
    body = text.text
    # The country code and check digits can sit well before the first cluster: "RO49 AAAA 1B31 0075 9384 0000".
    for match in text.near_clusters(_IBAN_SHAPE, _IBAN_KINDS, 30, 40):
        if match["loose"] is not None:
            if _loose_iban(body[match.start():match.end("loose")]):
                return True
            continue
        groups = _IBAN_SEPARATOR.split(body[match.start():match.end(1)].upper())
        # Trailing groups may be a following word ("... 7034 and"), so try every group count from the longest down.
        for count in range(len(groups), 0, -1):
            if iban_ok("".join(groups[:count])):
                return True
    return text.crowded


def _loose_iban(region: str) -> bool:
    """True when region, a country code then letters and digits split anyhow, starts with a valid IBAN that ends
    at a separator or at the region's end."""
    groups = _IBAN_LOOSE_SEPARATOR.split(region.upper())
    compact = "".join(groups)
    ends = {sum(map(len, groups[:count])) for count in range(1, len(groups) + 1)}
    return any(length in ends and iban_ok(compact[:length]) for length in _IBAN_LENGTHS)


def _national_id(text: _Text) -> bool:
    """A US Social Security number or a UK National Insurance number."""
    shape, body = text.shape, text.text
    for match in text.near_clusters(_NATIONAL_ID_SHAPE, _NATIONAL_ID_KINDS, 0, 4):
        start, end = match.span()
        found = _ssn_ok(shape, body, start, end) if match["ssn"] is not None else _nino_ok(shape, body, start, end)
        if found:
            return True
    return text.crowded


def _ssn_ok(shape: bytes, body: str, start: int, end: int) -> bool:
    """True when body[start:end], shaped 123-45-6789 or 123 45 6789, stands alone in a range the SSA issues."""
    area, group, serial = body[start:start + 3], body[start + 4:start + 6], body[start + 7:end]
    return (
        area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"
        and _standalone(shape, start, end, spaced=shape[start + 3] == _SPACE)
    )


def _nino_ok(shape: bytes, body: str, start: int, end: int) -> bool:
    """True when the digits and suffix at body[start:end], after two letters, follow HMRC's NINO rules."""
    start -= 3 if shape[start - 1] == _SPACE else 2
    candidate = body[start:end].replace(" ", "")
    letters = candidate[:2] + candidate[-1]
    if not (letters.isupper() or letters.islower()):
        return False
    prefix, suffix = candidate[:2].upper(), candidate[-1].upper()
    return (
        prefix[0] not in "DFIQUV" and prefix[1] not in "DFIOQUV" and prefix not in _NINO_BAD_PREFIXES
        and suffix in "ABCD"
    )


_BUILTINS: tuple[tuple[str, Callable[[_Text], bool]], ...] = (
    ("email", _email),
    ("phone", _phone),
    ("credit_card", _credit_card),
    ("iban", _iban),
    ("national_id", _national_id),
)
BUILTIN: frozenset[str] = frozenset(name for name, _ in _BUILTINS)
_NUMERIC: frozenset[Callable[[_Text], bool]] = frozenset((_phone, _credit_card, _iban, _national_id))  # need a digit
