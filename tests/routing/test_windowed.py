"""Regex passes a window at a time: the same matches as one pass, none twice, none lost at a window's edge."""

from __future__ import annotations

import random
import re

from gateway.routing import detectors, windowed


def spans(pattern: re.Pattern[str], text: str) -> list[tuple[int, int]]:
    return [m.span() for m in windowed.finditer(pattern, text)]


def test_windowed_search_finds_what_one_pass_finds() -> None:
    chooser = random.Random(3)
    shape = bytes(chooser.choice(b"0000000 .-/a") for _ in range(5 * windowed.WINDOW))
    pattern = detectors._CLUSTER_SHAPE
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
