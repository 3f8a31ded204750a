"""Big texts are read in pieces and windows, with the same result as reading them whole."""

from __future__ import annotations

import asyncio
import random
import unicodedata
from pathlib import Path

from gateway.routing import classify, detectors, normalise, text_view, windowed
from tests.routing.test_classify import classified

ALL = [detectors.builtin(name) for name in sorted(detectors.BUILTIN)]


def whole(text: str) -> str:
    """What normalise gives for text read in one pass (no percent, entity or backslash escapes in these texts): each
    character folded on its own, then NFKC over the whole."""
    return unicodedata.normalize("NFKC", text.translate(normalise._TABLE))


def test_a_long_text_normalises_as_in_one_pass() -> None:
    pool = [chr(c) for c in (*range(0x300, 0x370), *range(0x1100, 0x1200), *range(0xac00, 0xac20), *range(0x660, 0x66a),
                             0x3000, 0x200b, 0xff21, 0xff10, 0x1f600, 0x1d400, 0xb47, 0xb3e, 0x915, 0x93c, 0x65)]
    chooser = random.Random(7)
    for _ in range(3):
        text = "".join(chooser.choice(pool) for _ in range(3 * normalise.PIECE_CHARS))
        assert normalise.normalise(text) == whole(text)


def test_a_composition_across_a_piece_boundary_is_kept() -> None:
    filler = "\u00e9" * (normalise.PIECE_CHARS - 1)
    # An invisible character or a fullwidth letter just at the cut: folded first, then composed.
    for pair, composed in (("e\u0301", "\u00e9"), ("\u1100\u1161", "\uac00"), ("\u0b47\u0b3e", "\u0b4b"),
                           ("e\u200b\u0301", "\u00e9"), ("\uff25\u0301", "\u00c9"), ("e\u00ad\u0301", "\u00e9")):
        text = filler + pair + filler
        assert normalise.normalise(text) == filler + composed + filler


def test_numbers_and_addresses_across_a_window_edge_are_found() -> None:
    for found, name in (("4111 1111 1111 1111", "credit_card"), ("jane.doe@example.com", "email")):
        for offset in range(-len(found), 1, 3):
            head = "word " * ((2 * windowed.WINDOW + offset) // 5)
            text = head + found + " and more" + " word" * windowed.WINDOW
            assert detectors.scan(ALL, text) == name, (name, offset)


def test_a_big_body_is_classified_off_the_loop_with_the_same_features(tmp_path: Path) -> None:
    policy = classified(tmp_path)
    body = {"model": "chat", "messages": [{"role": "user", "content": "plain " * 100_000 + "jane.doe@example.com"}]}
    big = {"content-length": str(classify.OFF_LOOP_BYTES + 1)}
    inline = classify.features(policy, "acme", "chat", body, big)
    assert asyncio.run(classify.features_of(policy, "acme", "chat", body, big)) == inline
    undeclared = asyncio.run(classify.features_of(policy, "acme", "chat", body, {}))  # read off the loop too
    assert (undeclared.data_class, undeclared.prompt_tokens) == (inline.data_class, inline.prompt_tokens)
    assert inline.data_class == "personal"


def test_a_big_text_dense_with_digits_is_read_in_the_runs_view_with_the_matches_of_the_shape() -> None:
    chooser = random.Random(8)
    tokens = [b"0" * chooser.randint(1, 20) for _ in range(20)] + [bytes([byte]) for byte in b" .-/()\t\n+_@a?#$x"]
    parts: list[bytes] = []
    while sum(map(len, parts)) < 10 * windowed.WINDOW:
        # Now and then a stretch without digits, so that some chunks are passed over and the view has gaps.
        parts.append(b"?" * 40_000 if chooser.random() < 0.0002 else chooser.choice(tokens))
    text = text_view.TextView("")
    text._shape = b"".join(parts)
    assert len(text.regions) > 1
    for plain, on_runs in ((text_view._CLUSTER_SHAPE, text_view._CLUSTER_RUNS),
                           (detectors._CARD_SHAPE, detectors._CARD_RUNS)):
        assert [(m.span(), m.lastgroup) for m in text.region_matches(plain, on_runs)] == [
            (m.span(), m.lastgroup) for m in plain.finditer(text._shape)] != []
    assert text._runs  # the view was read, not the shape
    assert len(text._filled) < len(text._shape) // text_view._CHUNK + 1  # and the chunks without digits left out


def test_numbers_in_a_big_text_dense_with_digits_are_found() -> None:
    filler = "0123456789-- " * (3 * windowed.WINDOW // 13)
    for found, name in (("4111 1111 1111 1111", "credit_card"), ("DE89 3704 0044 0532 0130 00", "iban"),
                        ("+44 20 7946 0958", "phone"), ("123-45-6789", "national_id")):
        assert detectors.scan(ALL, f"{filler} see {found} here {filler}") == name, name
    assert detectors.scan(ALL, filler + "2024-03-15 " * 20_000) is None


def _folds(count: int) -> str:
    """count characters, each of which the table folds, taking the translate path (many distinct ones a piece)."""
    pool = "".join(chr(code) for code in sorted(normalise._TABLE) if 0x80 <= code < 0x800)
    return (pool * (count // len(pool) + 1))[:count]


def test_a_text_too_dear_to_fold_is_left_as_written_and_read_as_a_hit() -> None:
    text = _folds(normalise.FOLD_BUDGET // 40) + " mail jane@example.com"
    assert normalise.normalised(text) == (text, True)
    assert detectors.scan([detectors.builtin("email")], "plain words " + text) == "email"


def test_a_long_text_under_the_fold_budget_is_read() -> None:
    text = _folds(normalise.FOLD_BUDGET // 400) + " mail jane@example.com"
    normal, unread = normalise.normalised(text)
    assert not unread
    assert normal.endswith(" mail jane@example.com")
    assert normal == whole(text)


def test_megabytes_of_emoji_or_combining_accents_are_read_as_a_hit() -> None:
    for unit in ("\U0001f600", "e\u0301"):
        text = unit * (normalise.FOLD_BUDGET // 40 // len(unit))
        assert normalise.normalised(text)[1]
        assert detectors.scan(ALL, text) is not None


def test_a_text_with_more_pairs_of_digits_than_the_budget_is_crowded() -> None:
    text = "2024-03-15 " * 300_000  # 4 pairs of digits in 11 characters, 3.3 MB
    assert all(detectors.scan([detector], text) == detector.name for detector in ALL if detector.name != "email")


def test_a_text_under_the_pair_budget_is_read_to_its_end() -> None:
    text = "2024-03-15 lorem ipsum dol " * 120_000  # 4 pairs in 27 characters: under one in 8
    assert detectors.scan(ALL, text) is None
    assert detectors.scan(ALL, text + "card 4111 1111 1111 1111") == "credit_card"
