"""Content detectors that decide whether chat text contains personal data.

Each looks at the text as `gateway.routing.normalise` makes it (percent-escapes decoded, Unicode folded), through the
views of it in `gateway.routing.text_view`, and every one runs in time linear in its input: candidates are found by
regex passes whose matches are bounded in length, and the number of candidates a detector checks in Python is capped
by the text's length. A text with more candidates than that counts as a hit (fail closed): padding a body with decoys
cannot hide what follows them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from gateway.routing import windowed
from gateway.routing.number_checks import card_number_ok, iban_ok
from gateway.routing.text_view import TextView

__all__ = ["BUILTIN", "Detector", "builtin", "regex", "scan"]

# How many "@" signs the email detector reads for each of a text's looks (TextView.looks).
_AT_SIGNS_PER_LOOK = 4

_DIGIT = ord("0")
_SPACE = ord(" ")
_GLUE_BEFORE = frozenset(b"0a_@#$.+-/\\")
_GLUE_AFTER = frozenset(b"0a_@")
_JOINERS = frozenset(b".-/:,")

_IBAN_KINDS = frozenset({"split", "letter"})
_NATIONAL_ID_KINDS = frozenset({"split", "letter"})
_PHONE_KINDS = frozenset({"split", "plus"})
# A card number starts with a group of four digits followed by one of four to six and at least one more, or is one run
# of 13 to 19 digits. The groups may be split by up to three of space, tab, line break, ".", "/" and "-" (every other
# dash and space is one of these once the text is normalised).
_CARD_SHAPE = re.compile(
    rb"0000(?<![0a_.$#@+]0000)(?:(?=0{9,15}+(?![0a_@]))|(?!0)(?=[\t\n\r ./-]{1,3}0{4,6}+[\t\n\r ./-]{1,3}0))"
)
# The same for the runs view of a text past one window (gateway/routing/text_view.py).
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


@dataclass(frozen=True, slots=True)
class Detector:
    """A named test for personal data in chat text."""

    name: str
    _probe: Callable[[TextView], bool] = field(repr=False, compare=False)

    def search(self, text: str) -> bool:
        """True when this detector fires anywhere in text (or text is too dear to read: normalise.normalised)."""
        prepared = TextView(text)
        return prepared.unread or self._probe(prepared)


def builtin(name: str) -> Detector:
    """The built-in detector called name; KeyError if there is none."""
    return Detector(name, dict(_BUILTINS)[name])


def regex(name: str, pattern: str) -> Detector:
    """An operator-defined detector firing on a regex match; re.error on a bad pattern."""
    compiled = re.compile(pattern)

    def probe(text: TextView) -> bool:
        if compiled.search(text.raw) is not None:
            return True
        return text.text is not text.raw and compiled.search(text.text) is not None

    return Detector(name, probe)


def scan(detectors: Sequence[Detector], text: str) -> str | None:
    """Name of the first detector that fires on text, or None; the first named when text is too dear to read in
    bounded time, as normalise.normalised tells (fail closed: decoys must not hide the reference that matters)."""
    prepared = TextView(text)
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


def _email(text: TextView) -> bool:
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


def _phone(text: TextView) -> bool:
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


def _credit_card(text: TextView) -> bool:
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


def _iban(text: TextView) -> bool:
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


def _national_id(text: TextView) -> bool:
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


_BUILTINS: tuple[tuple[str, Callable[[TextView], bool]], ...] = (
    ("email", _email),
    ("phone", _phone),
    ("credit_card", _credit_card),
    ("iban", _iban),
    ("national_id", _national_id),
)
BUILTIN: frozenset[str] = frozenset(name for name, _ in _BUILTINS)
_NUMERIC: frozenset[Callable[[TextView], bool]] = frozenset((_phone, _credit_card, _iban, _national_id))  # need a digit
