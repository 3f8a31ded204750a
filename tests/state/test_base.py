"""The shared-state interface's arithmetic: nano-dollars, UTC periods and their ends, and counters held in bounds."""

from __future__ import annotations

import datetime as dt

import pytest

from gateway.state.base import MOST, NANO, Charge, Limits, bounded, period, resets_at, to_nano


def at(text: str) -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp()


@pytest.mark.parametrize(("usd", "nano"), [
    (0.0, 0), (1.0, NANO), (0.000000001, 1), (-2.5, -2_500_000_000),
    (float("nan"), 0), (float("inf"), MOST), (float("-inf"), -MOST), (1e300, MOST),
])
def test_dollars_become_whole_nano_dollars_within_bounds(usd: float, nano: int) -> None:
    assert to_nano(usd) == nano


def test_bounded_holds_a_value_between_least_and_most() -> None:
    assert (bounded(-5), bounded(7), bounded(MOST + 1)) == (0, 7, MOST)
    assert bounded(-MOST - 9, -MOST) == -MOST


@pytest.mark.parametrize(("window", "now", "name", "ends"), [
    ("day", "2026-11-25T23:59:59", "2026-11-25", "2026-11-26T00:00:00"),
    ("day", "2026-12-31T12:00:00", "2026-12-31", "2027-01-01T00:00:00"),
    ("month", "2026-11-30T23:59:59", "2026-11", "2026-12-01T00:00:00"),
    ("month", "2026-12-01T00:00:00", "2026-12", "2027-01-01T00:00:00"),
    ("month", "2028-02-29T10:00:00", "2028-02", "2028-03-01T00:00:00"),
])
def test_a_windows_period_is_named_in_utc_and_ends_at_the_next_one(window: str, now: str, name: str,
                                                                   ends: str) -> None:
    assert period(window, at(now)) == name
    assert resets_at(window, at(now)) == at(ends)


def test_limits_in_bounds_are_themselves_and_others_are_held_in_bounds() -> None:
    fine = Limits("t", requests_per_minute=10, tokens=5, budgets=(("day", NANO),), cost=3)
    assert fine.bounded() is fine
    wild = Limits("t", requests_per_minute=-1, tokens_per_minute=MOST + 5, tokens=-3, budgets=(("day", -1),),
                  cost=MOST * 2)
    assert wild.bounded() == Limits("t", 0, MOST, 0, (("day", 0),), MOST)


def test_limits_with_nothing_to_check_are_empty() -> None:
    assert Limits("t").empty
    assert not Limits("t", budgets=(("month", 1),)).empty
    assert not Limits("t", tokens_per_minute=1).empty


def test_a_charge_holds_savings_within_minus_most_to_most() -> None:
    fine = Charge("u", 1, 2, -3)
    assert fine.bounded() is fine
    assert Charge("u", -1, MOST + 1, -MOST - 1).bounded() == Charge("u", 0, MOST, -MOST)
