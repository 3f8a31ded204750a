"""Regex passes a window at a time: the same matches as one pass, none twice, none lost at a window's edge."""

from __future__ import annotations

import random
import re

from gateway.routing import detectors, text_view, windowed


def spans(pattern: re.Pattern[str], text: str) -> list[tuple[int, int]]:
    return [m.span() for m in windowed.finditer(pattern, text)]


def test_windowed_search_finds_what_one_pass_finds() -> None:
    chooser = random.Random(3)
    shape = bytes(chooser.choice(b"0000000 .-/a") for _ in range(5 * windowed.WINDOW))
    pattern = text_view._CLUSTER_SHAPE
    assert [m.span() for m in windowed.finditer(pattern, shape)] == [m.span() for m in pattern.finditer(shape)]


def test_a_text_within_one_window_and_its_reach_is_one_pass() -> None:
    text = "ab" * ((windowed.WINDOW + windowed.REACH) // 2)
    assert spans(re.compile("b+a"), text) == [m.span() for m in re.finditer("b+a", text)]
    assert len(spans(re.compile("ab"), text)) == (windowed.WINDOW + windowed.REACH) // 2


def test_a_match_across_a_window_edge_is_found_once() -> None:
    for start in (windowed.WINDOW - 5, windowed.WINDOW - 1, windowed.WINDOW, 2 * windowed.WINDOW - 3):
        text = "." * start + "needle-1234" + "." * (3 * windowed.WINDOW)
        assert spans(re.compile(r"needle-\d+"), text) == [(start, start + len("needle-1234"))], start


def test_matches_that_run_on_past_a_window_edge_resume_where_they_ended() -> None:
    text = "x" * (windowed.WINDOW - 10) + "y" * 100 + "x" * (2 * windowed.WINDOW)
    found = spans(re.compile("y+|x{1000}"), text)
    assert found == [m.span() for m in re.finditer("y+|x{1000}", text)]
    assert (windowed.WINDOW - 10, windowed.WINDOW + 90) in found


def test_bytes_are_searched_as_text_is() -> None:
    data = b"0" * (3 * windowed.WINDOW) + b"4111 1111"
    assert [m.span() for m in windowed.finditer(re.compile(rb"\d{4} \d{4}"), data)] == [
        (len(data) - 9, len(data))]


def _by_region(pattern: re.Pattern[bytes], shape: bytes) -> list[tuple[int, int]]:
    """The spans of pattern's matches read region by region, as the detectors read them."""
    return [m.span() for start, end in text_view._regions(shape)
            for m in windowed.finditer(pattern, shape, start, end + windowed.REACH)]


def test_reading_only_the_regions_digits_and_separators_reach_finds_what_one_pass_finds() -> None:
    chooser = random.Random(5)
    digits = [b"0" * chooser.randint(1, 20) for _ in range(20)]
    singles = [bytes([byte]) for byte in b" .-/()\t\n+_@a?#$x"]
    for cold in (b"", b"\\a0000" * 4000, b"x" * 30_000):  # between the numbers: nothing, escapes, words
        tokens = digits + singles + [cold]
        shape = b"".join(chooser.choice(tokens) for _ in range(40_000 if not cold else 400))
        assert len(shape) > windowed.WINDOW + windowed.REACH
        for pattern in (text_view._CLUSTER_SHAPE, detectors._CARD_SHAPE):
            assert _by_region(pattern, shape) == [m.span() for m in pattern.finditer(shape)], cold[:8]


def test_a_big_text_of_escapes_has_no_region_to_read_and_a_small_one_is_read_whole() -> None:
    assert text_view._regions(b"\\a0000" * 20_000) == ()
    data = b"\\a0000" * 20_000 + b"0000 0000" + b"x" * 100_000
    assert text_view._regions(data) == ((7 * text_view._CHUNK, 8 * text_view._CHUNK),)
    small = text_view.TextView("\\u0041 4111 1111 1111 1111 " * 50)  # within one window: read whole, as one pass
    assert [m.span() for m in small.region_matches(detectors._CARD_SHAPE)] == [
        m.span() for m in detectors._CARD_SHAPE.finditer(small.shape)] != []


def test_a_stretch_across_the_first_look_or_a_chunk_edge_marks_its_chunks() -> None:
    chunk, peek = text_view._CHUNK, text_view._PEEK
    for at, chunks in ((3 * chunk + peek - 3, [3]), (3 * chunk + peek - 6, [3]), (4 * chunk - 3, [3, 4]),
                       (4 * chunk - 6, [3]), (4 * chunk, [4])):
        data = bytearray(b"x" * (8 * chunk))
        data[at:at + 6] = b"0.0000"
        assert text_view._regions(bytes(data)) == ((chunks[0] * chunk, (chunks[-1] + 1) * chunk),), at


def test_a_window_of_a_range_finds_what_one_pass_over_the_range_finds() -> None:
    text = ("ab" * (3 * windowed.WINDOW)).encode()
    pattern = re.compile(b"ba")
    start, end = 1001, 2 * windowed.WINDOW + windowed.REACH + 7
    assert [m.span() for m in windowed.finditer(pattern, text, start, end)] == [
        m.span() for m in pattern.finditer(text, start, end)]
