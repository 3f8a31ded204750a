"""The retry budget with explicit clocks: 20% of requests plus a floor of one a second, over a 10 s window."""

from __future__ import annotations

import pytest

from gateway.state.retry_budget import RetryBudget


def spend(budget: RetryBudget, now: float) -> int:
    """Retries granted at now until the budget says no."""
    granted = 0
    while budget.try_retry(now):
        granted += 1
        assert granted < 10_000
    return granted


def requests(budget: RetryBudget, count: int, now: float) -> None:
    for _ in range(count):
        budget.request(now)


@pytest.mark.parametrize(("count", "allowed"), [(0, 10), (1, 10), (5, 11), (50, 20), (100, 30), (1000, 210)])
def test_retries_stay_under_20_percent_of_requests_plus_a_floor(count: int, allowed: int) -> None:
    budget = RetryBudget()
    requests(budget, count, 100.0)
    assert spend(budget, 100.5) == allowed


def test_each_request_adds_a_fifth_of_a_retry() -> None:
    budget = RetryBudget()
    assert spend(budget, 100.0) == 10
    requests(budget, 4, 100.0)
    assert not budget.try_retry(100.0)
    budget.request(100.0)  # 5 requests: one more retry
    assert budget.try_retry(100.0)
    assert not budget.try_retry(100.0)


def test_the_ratio_floor_and_window_are_settable() -> None:
    budget = RetryBudget(ratio=0.5, floor_per_s=0.0, window_s=5)
    requests(budget, 10, 100.0)
    assert spend(budget, 100.0) == 5
    assert spend(budget, 104.9) == 0
    assert spend(budget, 105.0) == 0  # the requests expired with the retries: nothing to retry on
    requests(budget, 2, 105.0)
    assert spend(budget, 105.0) == 1


def test_old_buckets_expire_as_time_moves_on() -> None:
    budget = RetryBudget()
    requests(budget, 50, 100.0)
    assert spend(budget, 100.0) == 20
    requests(budget, 50, 105.0)
    assert spend(budget, 105.0) == 10  # 10 + 0.2 * 100 = 30 in the window, 20 spent
    assert spend(budget, 109.99) == 0  # second 100 is still inside the window 100..109
    # at 110 second 100 leaves: its 50 requests and 20 retries go; 105's 50 and 10 stay: 10 + 10 - 10
    assert spend(budget, 110.0) == 10
    # at 115 second 105 leaves too: only the floor, less the 10 spent at 110
    assert spend(budget, 115.0) == 0
    assert spend(budget, 120.0) == 10


def test_a_long_idle_gap_resets_everything() -> None:
    budget = RetryBudget()
    requests(budget, 100, 100.0)
    assert spend(budget, 100.0) == 30
    assert spend(budget, 5000.0) == 10  # only the floor: no request and no retry is remembered
    requests(budget, 100, 5000.0)
    assert spend(budget, 5000.0) == 20


def test_the_window_slides_one_second_at_a_time() -> None:
    budget = RetryBudget()
    for second in range(100, 110):
        requests(budget, 10, float(second))
    assert spend(budget, 109.0) == 30  # 100 requests in the window: 10 + 20
    assert spend(budget, 110.0) == 0  # second 100 left with 10 requests; the 30 retries of 109 still count
    assert spend(budget, 118.9) == 0
    assert spend(budget, 119.0) == 10  # second 109 left: only the floor
