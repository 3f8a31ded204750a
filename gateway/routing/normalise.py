"""Text as the detectors read it: percent-encoding decoded, Unicode folded to the plain forms people write data in.

Every step is a C-speed pass over the text (no Python work per character), and a step whose trigger is absent
costs one search: plain ASCII text without "%" comes back as it is.
"""

from __future__ import annotations

import codecs
import html
import re
import unicodedata
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

__all__ = ["entities_crowded", "normalise", "normalised"]

# Beyond Unicode's dash punctuation (Pd), characters that read as a minus or a hyphen.
_EXTRA_DASHES = "\u00af\u02d7\u2043\u2212\u2796\u2e3a\u2e3b\ufe63\uff0d"
# Invisible characters outside the format category (Cf) that fonts draw as nothing.
_EXTRA_INVISIBLE = "\u034f\u115f\u1160\u17b4\u17b5\u3164\uffa0" + "".join(map(chr, range(0xfe00, 0xfe10)))
# Characters above the BMP are rare: each of the first few is looked up, and a text with more is searched with a
# pattern of the ranges the table maps (slower per character than the BMP's pattern, kept as a bitmap).
_ABOVE_BMP = re.compile("[\U00010000-\U0010ffff]")
_ABOVE_BMP_LOOKS = 64
# Up to this many distinct characters to fold are replaced one at a time (a pass of about 0.6 ns a character each,
# for the text's own few: a CJK text's fullwidth forms); past them one translate pass (10-30 ns a character) does the
# rest.
_REPLACES = 24
# How far past a character to fold the next distinct ones are gathered, to be replaced before searching again.
_GATHER = 64
# Text with fewer BMP characters to fold than one per this many is folded by a substitution per character (about
# 0.5 us each) rather than a translate of every character.
_CHARS_PER_SUB = 64
# Non-ASCII text longer than this is normalised in pieces of about this many characters, so that no one C call holds
# the interpreter (and a worker thread the GIL) for long; a cut is looked for a window of characters at a time.
PIECE_CHARS = 1 << 16
# What normalising a text in pieces may cost, in units of a character read by one C pass (about 2 ns): a replace
# costs a unit a character, a translate, NFKC proper or a search above the BMP about _DEAR_UNITS. A text that would
# cost more (megabytes of compatibility forms, combining accents or emoji: none is prose in any script) is reported
# unread, which the detectors take as a hit (fail closed), after about a tenth of a second.
FOLD_BUDGET = 48 << 20
_DEAR_UNITS = 48
_CUT_WINDOW = 4096
# How many times percent-escapes are decoded, for text encoded more than once.
_PERCENT_ROUNDS = 3
_PERCENT_ESCAPE = re.compile("%[0-9A-Fa-f]{2}")
# Full stops of other scripts that NFKC leaves alone, read as "." (a domain written "example\u3002com").
_EXTRA_DOTS = "\u3002\u2e3c"
# HTML character references: the named ones that write an address or a number's separators, replaced in C passes
# ("&amp;" first, for text encoded twice), and numeric ones ("&#64;", "&#x40;"), decoded at about a microsecond each,
# so a text with more than _ENTITIES_BASE + one per _CHARS_PER_ENTITY characters is not decoded but reported crowded.
_NAMED_ENTITIES = (("&amp;", "&"), ("&commat;", "@"), ("&period;", "."), ("&nbsp;", " "), ("&ensp;", " "),
                   ("&emsp;", " "), ("&thinsp;", " "), ("&hyphen;", "-"), ("&dash;", "-"), ("&minus;", "-"),
                   ("&ndash;", "-"), ("&mdash;", "-"), ("&sol;", "/"), ("&colon;", ":"))
_NUMERIC_ENTITY = re.compile(r"&#(?:[0-9]{1,8}|[xX][0-9a-fA-F]{1,8});?")
_ENTITIES_BASE = 1024
_CHARS_PER_ENTITY = 128
# The escapes of JSON held in a string (and Python's \x): what a model reading the string would decode.
# How many times backslash escapes are decoded: JSON held in a JSON string, read from a body's own JSON text.
_ESCAPE_ROUNDS = 4
_BACKSLASH_ESCAPE = re.compile(r"\\[uUxnrtbf]")
# The backslash of an escape the codec would warn about: before a character that starts no escape it knows, or an
# octal escape past \377 (no JSON escape either: kept as written). It is written as an escape of its own, b"\\x5c".
# Text is searched first for a backslash before anything but the other escapes: a cheaper try at each backslash.
_ODD_BACKSLASH = re.compile(rb"\\(?=[^\n\\'\"abfnrtvxuUN0-7]|[4-7][0-7]{2})")
_MAYBE_ODD = re.compile(rb"\\[^\n\\'\"abfnrtvxuUN0-3]")


def _build() -> tuple[Mapping[int, str | None], Mapping[int, str | int | None], tuple[str | int | None, ...],
                    re.Pattern[str], re.Pattern[bytes]]:
    """The folding table (each character NFKC or the fold changes, as they make it on its own), it for str.translate
    (whole, and as a tuple for the BMP) and patterns finding a character it maps in the BMP and above it."""
    table: dict[int, str | None] = {}
    for code in (*range(0x80, 0xd800), *range(0xe000, 0x20000), *range(0x2f800, 0x2fa20), *range(0xe0000, 0xe1000)):
        char = chr(code)
        # NFKC leaves a character without decomposition data as it is (Hangul syllables compose by rule, not data).
        if unicodedata.decomposition(char):
            folded = "".join(map(_folded_char, unicodedata.normalize("NFKC", char)))
        else:
            folded = _folded_char(char)
        if folded != char:
            table[code] = folded or None
    bmp = "".join(re.escape(chr(code)) for code in sorted(table) if code < 0x10000)
    translation: dict[int, str | int | None] = {code: code for code in range(0x80)}  # a miss costs a KeyError
    translation.update(table)
    # A tuple indexed by code point: each character an index, never a missed key (a KeyError each, 3x the cost).
    bmp_translation = tuple(translation.get(code, code) for code in range(0x10000))
    return (MappingProxyType(table), MappingProxyType(translation), bmp_translation, re.compile(f"[{bmp}]"),
            _utf8_pattern(code for code in table if code >= 0x10000))


def _folded_char(char: str) -> str:
    """What the fold makes of one character: nothing for an invisible one, the ASCII space, dash, full stop or digit
    for the others it reads as such, and char itself for the rest."""
    category = unicodedata.category(char)
    if category == "Cf" or char in _EXTRA_INVISIBLE:
        return ""
    if category in ("Zs", "Zl", "Zp") or char == "\x85":
        return " "
    if category == "Pd" or char in _EXTRA_DASHES:
        return "-"
    if char in _EXTRA_DOTS:
        return "."
    if category == "Nd":
        return str(unicodedata.decimal(char))
    return char


def _utf8_pattern(codes: Iterable[int]) -> re.Pattern[bytes]:
    """A pattern finding any of codes (all above the BMP) in UTF-8: a trie of their first three bytes and a set of
    last ones. A pattern of str ranges tests every range in turn for each character above the BMP, about 90 ns one;
    this one looks at a byte or two."""
    trie: dict[int, dict[int, dict[int, set[int]]]] = {}
    for code in codes:
        first, second, third, last = chr(code).encode()
        trie.setdefault(first, {}).setdefault(second, {}).setdefault(third, set()).add(last)

    def branches(level: Mapping[int, Any]) -> bytes:
        return b"(?:" + b"|".join(re.escape(bytes([byte])) + (
            b"[" + b"".join(re.escape(bytes([b])) for b in sorted(rest)) + b"]" if isinstance(rest, set)
            else branches(rest)) for byte, rest in sorted(level.items())) + b")"

    return re.compile(branches(trie))


def _ranges(table: Mapping[int, object], start: int) -> list[tuple[int, int]]:
    """The runs of consecutive code points from start up in table, as (first, last)."""
    runs: list[tuple[int, int]] = []
    for code in sorted(c for c in table if c >= start):
        if runs and runs[-1][1] == code - 1:
            runs[-1] = (runs[-1][0], code)
        else:
            runs.append((code, code))
    return runs


_TABLE, _TRANSLATION, _BMP_TRANSLATION, _MAPPED_BMP, _MAPPED_ABOVE_BMP = _build()


def _build_cuts() -> tuple[re.Pattern[str], re.Pattern[str]]:
    """Patterns of the characters, in the BMP and above it, that text may be cut before for normalising: a character
    the table folds to something that starts with a starter no composition takes as its second part (every ASCII
    character), so that nothing before the cut composes or reorders with anything after it."""
    codes = (*range(0x80, 0xd800), *range(0xe000, 0x10000), *_CUTS_ABOVE_BMP)
    seconds = set(_JAMO)  # Hangul jamo compose into syllables by rule, not by the decomposition data
    for code in (*range(0x80, 0xd800), *range(0xe000, 0x10000), *range(0x11000, 0x12000)):  # and SMP scripts'
        parts = unicodedata.decomposition(chr(code)).split()
        if len(parts) == 2 and not parts[0].startswith("<"):
            seconds.add(int(parts[1], 16))

    def cuts_before(code: int) -> bool:
        folded = _TABLE.get(code, chr(code)) or ""
        return folded != "" and ord(folded[0]) not in seconds and unicodedata.combining(folded[0]) == 0
    stable = dict.fromkeys(code for code in codes if cuts_before(code))
    bmp = "".join(f"{re.escape(chr(low))}-{re.escape(chr(high))}" for low, high in _ranges(stable, 0x80)
                  if high < 0x10000)
    above = "".join(f"{re.escape(chr(low))}-{re.escape(chr(high))}" for low, high in _ranges(stable, 0x10000))
    return re.compile(f"[\x00-\x7f{bmp}]"), re.compile(f"[{above}]")


_JAMO = range(0x1160, 0x1200)
# Where cuts are looked for above the BMP (all of it would double the start-up cost): mathematical letters and
# digits, emoji and other symbols, the characters a long text of only those would be made of.
_CUTS_ABOVE_BMP = (*range(0x1d400, 0x1d800), *range(0x1f000, 0x20000))
_CUT_BMP, _CUT_ABOVE_BMP = _build_cuts()


def normalise(text: str) -> str:
    """text with percent-escapes and HTML character references decoded, NFKC applied, invisible characters removed,
    and every other space, dash and decimal digit made the ASCII one: "jane%40example.com", "jane&#64;example.com"
    and fullwidth or Arabic-Indic digits read as written."""
    return normalised(text)[0]


def normalised(text: str) -> tuple[str, bool]:
    """normalise(text), and whether it was too dear to read: too many numeric HTML references to decode, or too much
    to fold (past FOLD_BUDGET); text is then left as written.

    Text with backslash escapes is read as written and as decoded, once and again for JSON held in JSON: decoding
    "\\u4111 1111..." as one character must not hide the card number it starts.
    """
    crowded = False
    if "%" in text and _PERCENT_ESCAPE.search(text) is not None:
        text = _percent_unescaped(text)
    if "&" in text:
        text, crowded = _entities_decoded(text)
    if "\\" in text and _BACKSLASH_ESCAPE.search(text) is not None:
        text = _with_escapes_decoded(text)
    if text.isascii():
        return text, crowded
    if len(text) <= PIECE_CHARS:
        return _unicode_normalised(text)[0], crowded
    return _normalised_pieces(text, crowded)


def _normalised_pieces(text: str, crowded: bool) -> tuple[str, bool]:
    """A long text normalised a piece at a time, or text itself and True once that costs more than FOLD_BUDGET."""
    done, spent = [], 0
    for piece in _pieces(text):
        normal, cost = _unicode_normalised(piece)
        spent += cost
        if spent > FOLD_BUDGET:
            return text, True
        done.append(normal)
    return "".join(done), crowded


def _unicode_normalised(text: str) -> tuple[str, int]:
    """text with each character folded on its own, then NFKC over it for what spans characters (a letter, an
    accent); and what that cost in units."""
    if text.isascii():
        return text, 0
    folded, cost = _folded(text)
    # NFKC over folded text is a check of each character (about 2 ns) unless one may compose or is out of order;
    # NFKC proper costs up to 150 ns a character on CJK text, where one ideographic space sent a piece through it.
    normal = unicodedata.normalize("NFKC", folded)
    # CPython hands back the same object only when its quick check passed; any other answer, equal or not, was NFKC
    # proper (a "maybe" of the quick check normalises in full), and is charged as such.
    return normal, cost + (len(folded) * _DEAR_UNITS if normal is not folded else len(folded))


def _pieces(text: str) -> list[str]:
    """text cut into pieces of about PIECE_CHARS, each before a character whose folded form nothing before composes
    or reorders with, so that normalising the pieces one by one gives what normalising text whole does."""
    pieces, start = [], 0
    while len(text) - start > PIECE_CHARS:
        cut = _cut_at(text, start + PIECE_CHARS)
        if cut is None:
            break
        pieces.append(text[start:cut])
        start = cut
    pieces.append(text[start:])
    return pieces


def _cut_at(text: str, at: int) -> int | None:
    """The first place from at where text may be cut for NFKC, or None: a window at a time, each searched with the
    BMP's pattern (a bitmap) and then the slower one of characters above it."""
    while at < len(text):
        end = at + _CUT_WINDOW
        found = _CUT_BMP.search(text, at, end) or _CUT_ABOVE_BMP.search(text, at, end)
        if found is not None:
            return found.start()
        at = end
    return None


def entities_crowded(text: str) -> bool:
    """True when text holds too many numeric HTML character references to decode them in bounded time."""
    return text.count("&#") > _ENTITIES_BASE + len(text) // _CHARS_PER_ENTITY


def _entities_decoded(text: str) -> tuple[str, bool]:
    """text with HTML character references decoded, and whether it held too many numeric ones to (then left)."""
    if ";" in text:
        for name, char in _NAMED_ENTITIES:
            if name in text:
                text = text.replace(name, char)
    if "&#" not in text or _NUMERIC_ENTITY.search(text) is None:
        return text, False
    if entities_crowded(text):
        return text, True
    decoded: dict[str, str] = {}

    def decode(match: re.Match[str]) -> str:
        found = decoded.get(match[0])
        if found is None:
            found = decoded[match[0]] = html.unescape(match[0])
        return found

    return _NUMERIC_ENTITY.sub(decode, text), False


def _percent_unescaped(text: str) -> str:
    """text with percent-escapes decoded, as often as it was encoded ("%2540" is "%40" encoded again)."""
    for _ in range(_PERCENT_ROUNDS):
        decoded = _percent_decoded(text)
        if decoded == text or "%" not in decoded:
            return decoded
        text = decoded
    return text


def _percent_decoded(text: str) -> str:
    """text with every %XX escape decoded as UTF-8; a "%" that starts no escape is dropped."""
    # Turned into \\xXX escapes for the codec: one C pass, where a regex substitution costs a Python call per escape.
    data = text.encode("utf-8", "surrogatepass").replace(b"\\", b"\\\\").replace(b"%", b"\\x")
    decoded: bytes = codecs.escape_decode(data, "ignore")[0]
    return decoded.decode("utf-8", "replace")


def _with_escapes_decoded(text: str) -> str:
    """text, then each form decoding its backslash escapes again gives (JSON in JSON escapes "\\u0040" twice), one a
    line, up to _ESCAPE_ROUNDS decodings."""
    forms = [text]
    for _ in range(_ESCAPE_ROUNDS):
        decoded = _escapes_decoded(forms[-1])
        if decoded == forms[-1]:
            break
        forms.append(decoded)
        if "\\" not in decoded or _BACKSLASH_ESCAPE.search(decoded) is None:
            break
    return "\n".join(forms)


def _escapes_decoded(text: str) -> str:
    """text with backslash escapes (\\u0040, \\n...) decoded; one the codec does not know is kept as written."""
    data = text.encode("latin-1", "backslashreplace")
    if _MAYBE_ODD.search(data) is not None:
        # Escaped backslashes first, so that each backslash left starts an escape: "\\\\q" is "\\" and "q".
        data = _ODD_BACKSLASH.sub(rb"\\x5c", data.replace(b"\\\\", b"\\x5c"))
    return data.decode("unicode_escape", "ignore")


def _folded(text: str) -> tuple[str, int]:
    """text with every character the table maps replaced (a replace per distinct one, or _many_folded), and what
    that cost in units."""
    found, left, cost = _MAPPED_BMP.search(text), _REPLACES, 0
    while found is not None:
        start = found.start()  # text before it holds nothing to map, and a replace leaves it where it was
        chars = set(_MAPPED_BMP.findall(text, start, start + _GATHER))  # the next few distinct ones, in one search
        left -= len(chars)
        if left < 0:
            text = _many_folded(text)
            cost += len(text) * _DEAR_UNITS
            break
        for char in chars:
            text = text.replace(char, _TABLE.get(ord(char)) or "")
        cost += len(text) * len(chars)
        found = _MAPPED_BMP.search(text, start)
    maps, searched = _maps_above_bmp(text)
    if maps:
        text = text.translate(_TRANSLATION)
        cost += len(text) * _DEAR_UNITS
    return text, cost + searched * _DEAR_UNITS


def _many_folded(text: str) -> str:
    """text with every BMP character the table maps replaced: one translate pass (about 10-30 ns a character, however
    few need it; a character above the BMP is left, at the cost of an IndexError), or a substitution per character
    found when they are fewer than one per _CHARS_PER_SUB."""
    most = len(text) // _CHARS_PER_SUB
    if most < 1 or len(_MAPPED_BMP.split(text, maxsplit=most)) > most:  # split stops counting at most
        return text.translate(_BMP_TRANSLATION)
    return _MAPPED_BMP.sub(_fold_one, text)


def _fold_one(match: re.Match[str]) -> str:
    return _TABLE.get(ord(match[0])) or ""


def _maps_above_bmp(text: str) -> tuple[bool, int]:
    """Whether text holds a character above the BMP that the table maps (a tag character, say), and how many
    characters above the BMP were searched for it as UTF-8 (each about 90 ns)."""
    for looked, match in enumerate(_ABOVE_BMP.finditer(text)):
        if looked == _ABOVE_BMP_LOOKS:  # the rest searched as UTF-8: a few ns a character, more for each above the BMP
            rest = text[match.start():].encode("utf-8", "surrogatepass")
            return _MAPPED_ABOVE_BMP.search(rest) is not None, rest.count(b"\xf0") + rest.count(b"\xf3")
        if ord(match[0]) in _TABLE:
            return True, 0
    return False, 0
