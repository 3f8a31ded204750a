"""gateway.routing.text_view: the views of one text the numeric detectors share, each made once."""

from __future__ import annotations

from gateway.routing.text_view import TextView


def test_the_shape_has_one_byte_a_character() -> None:
    view = TextView("Card 4111-1111, été!")
    assert view.shape == b"aaaa 0000-0000, ?a?!"  # "\u00e9" is not ASCII
    assert view.shape is view.shape  # made once


def test_clusters_are_found_by_kind_and_dates_are_not_clusters() -> None:
    view = TextView("pay 4111 1111 1111 1111 on 2024-03-15 to +44 20 7946 0958")
    kinds = [kind for _, _, kind in view.clusters]
    assert kinds == ["split", "plus"]
    assert not view.crowded


def test_a_text_with_more_clusters_than_looks_is_crowded() -> None:
    view = TextView("+44 207946 ; " * 2000)  # 2,000 clusters; looks grow one per KiB from 1,024
    assert len(view.clusters) == view.looks < 2000
    assert view.crowded


def test_normalising_is_done_once_and_kept_beside_the_raw_text() -> None:
    raw = "jane\u200b.doe@example.com"
    view = TextView(raw)
    assert (view.raw, view.text, view.unread) == (raw, "jane.doe@example.com", False)
