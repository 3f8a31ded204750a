"""Text as the detectors read it: escapes decoded, Unicode folded, and crowded references reported, not decoded."""

from __future__ import annotations

import unicodedata
import warnings

import pytest

from gateway.routing import normalise as normalise_module
from gateway.routing.normalise import (
    _BMP_TRANSLATION,
    _MAPPED_ABOVE_BMP,
    _TABLE,
    _TRANSLATION,
    _escapes_decoded,
    _folded,
    entities_crowded,
    normalise,
    normalised,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain ascii", "plain ascii"),
        ("jane%40example.com", "jane@example.com"),
        ("a%2540b", "a@b"),
        ("50% off, 20%", "50% off, 20%"),
        ("x%4", "x%4"),
        ('{"to": "a\\u0040b"}', '{"to": "a\\u0040b"}\n{"to": "a@b"}'),

        ("ja\u200bne\u00ad\u2060x", "janex"),
        ("\uff14\uff11 \u0664\u0661", "41 41"),
        ("a\u2014b\u2212c\u2013d", "a-b-c-d"),
        ("a\u3000b\u2007c\u2028d", "a b c d"),
        ("\U0001e951\U0001e952", "12"),
        ("caf\u00e9 \U0001f600", "caf\u00e9 \U0001f600"),
        ("e\u200b\u0301 \uff25\u0301 \u2474", "\u00e9 \u00c9 (1)"),
        ("\u6570\u5b57\uff08\uff11\uff12\uff09\uff01\u3000\ufe58", "\u6570\u5b57(12)! -"),
    ],
)
def test_normalise(text: str, expected: str) -> None:
    assert normalise(text) == expected


def test_the_table_folds_a_character_as_nfkc_then_the_fold_would_and_needs_no_second_pass() -> None:
    assert [_TABLE[0xff21], _TABLE[0x3000], _TABLE[0x0661], _TABLE[0x200b]] == ["A", " ", "1", None]
    assert _TABLE[0xfe58] == "-"  # a small em dash: NFKC makes it an em dash, which the fold makes "-"
    assert [code for code, folded in _TABLE.items() if folded and any(ord(char) in _TABLE for char in folded)] == []


def test_no_composition_makes_a_character_the_table_folds() -> None:
    """NFKC over folded text composes letters and accents; what it makes must need no folding again."""
    composites = [code for code in range(0x80, 0x30000) if _canonical_pair(chr(code))]
    assert len(composites) > 900
    assert [hex(code) for code in composites
            if code in _TABLE and ord(unicodedata.normalize("NFD", chr(code))[0]) not in _TABLE] == []


def _canonical_pair(char: str) -> bool:
    """True when char is a primary composite: canonically two characters, and what NFC makes of them."""
    parts = unicodedata.decomposition(char).split()
    return len(parts) == 2 and not parts[0].startswith("<") and unicodedata.normalize("NFC", char) == char


def test_plain_ascii_text_is_returned_as_it_is() -> None:
    text = "Summarise the meeting notes " * 10
    assert normalise(text) is text


@pytest.mark.parametrize(("text", "expected"), [
    ("jane&#64;example&period;com", "jane@example.com"),
    ("a&amp;#64;b", "a@b"),
    ("4111&nbsp;1111", "4111 1111"),
    ("Tom &amp; Jerry", "Tom & Jerry"),
])
def test_html_references_are_decoded(text: str, expected: str) -> None:
    assert normalise(text) == expected


def test_too_many_numeric_references_are_left_as_written_and_reported() -> None:
    crowded = "&#65;" * 2_000 + "jane&#64;example.com"
    assert entities_crowded(crowded)
    assert normalised(crowded) == (crowded, True)
    assert normalised("jane&#64;example.com") == ("jane@example.com", False)
    assert not entities_crowded("&#65;" * 10)


def test_a_backslash_escape_adds_its_decoded_reading_and_a_non_escape_is_kept() -> None:
    assert normalise("card \\4111 1111") == "card \\4111 1111"
    assert normalise('"a\\u0040b"').splitlines() == ['"a\\u0040b"', '"a@b"']


def test_the_pattern_of_mapped_characters_above_the_bmp_agrees_with_the_table_on_every_code_point() -> None:
    disagree = [code for code in range(0x10000, 0x110000)
                if (_MAPPED_ABOVE_BMP.search(chr(code).encode()) is not None) != (code in _TABLE)]
    assert disagree == []


def test_the_bmp_tuple_translates_every_code_point_as_the_table_does() -> None:
    assert [code for code in range(0x10000) if _BMP_TRANSLATION[code] != _TRANSLATION.get(code, code)] == []


def test_many_distinct_characters_to_fold_among_others_and_above_the_bmp_are_all_folded() -> None:
    to_fold = [chr(code) for code in sorted(_TABLE) if code < 0x10000][:300]  # past the replace-one-at-a-time path
    others = ["\u4e2d", "\u00e9", "\U0001f600", "\U0001d400", "\U000e0041", "x"]  # one mapped above the BMP, a tag
    text = "".join(char + others[i % len(others)] for i, char in enumerate(to_fold)) * 50
    folded = _folded(text)[0]
    assert folded == text.translate(_TRANSLATION)
    assert "\U0001d400" not in folded
    assert "\U000e0041" not in folded


def test_a_tag_character_after_many_emoji_is_still_removed() -> None:
    text = "hi \U0001f600 " * 20_000 + "jane\U000e0041@example.com"
    assert normalise(text).endswith("jane@example.com")


def codec_decoded(text: str) -> tuple[str, bool]:
    """What the unicode_escape codec makes of text, its warnings silenced (as normalise did before), and whether it
    warned."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DeprecationWarning)
        decoded = text.encode("latin-1", "backslashreplace").decode("unicode_escape", "ignore")
    return decoded, bool(caught)


@pytest.mark.parametrize("text", ["a\\qb \\u0040", "\\8\\9 \\x41", "\\\\q \\\\\\q \\\\\\\\u0041",
                                  "\\N{DASH} \\z\u00e9\\\u20ac", "\\377\\0\\41 \\4 \\q\\"])
def test_unknown_escapes_are_kept_as_the_codec_keeps_them_without_a_warning(text: str) -> None:
    decoded, warned = codec_decoded(text)
    assert warned  # the codec warns about each of these texts
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the escape pass must not warn
        assert _escapes_decoded(text) == decoded
    # nor swap the process-wide filters (catch_warnings), which a worker thread must not do while others run
    assert not hasattr(normalise_module, "warnings")


def test_an_octal_escape_past_377_is_kept_as_written_without_a_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _escapes_decoded("\\411 \\\\411 \\7771 \\u0040") == "\\411 \\411 \\7771 @"
        assert normalise("\\u0040 card \\4111 1111 1111 1111").endswith("\n@ card \\4111 1111 1111 1111")
