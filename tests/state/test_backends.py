"""The state backends, memory and Redis, held to the same tests (the rig, tests/state/rig.py, runs each)."""

from __future__ import annotations

import asyncio

import pytest

from gateway.state.base import MOST, RESERVATION_TTL_MS, Charge, Limits, Rate
from gateway.state.redis import RedisBackend
from tests.state.rig import NOON, TENANT, Rig, at, budget, rpm, tpm

pytest_plugins = ["tests.redis_server"]

# --- requests per minute -------------------------------------------------------------------------------------------


async def test_requests_per_minute_admits_exactly_the_limit_in_a_sliding_minute(rig: Rig) -> None:
    limits = rpm(3)
    for _ in range(3):
        assert (await rig.admit(limits)).ok
        await rig.advance(10)
    refused = await rig.admit(limits)  # at +30 s: three in the last minute
    assert (refused.ok, refused.limit, refused.reservation) == (False, "requests_per_minute", "")
    assert refused.retry_after_s == pytest.approx(30, abs=rig.slack())  # the first one leaves the window at +60 s
    await rig.advance(29)
    assert not (await rig.admit(limits)).ok
    await rig.advance(1)  # +60 s: the first has left the window, the others have not
    assert (await rig.admit(limits)).ok
    refused = await rig.admit(limits)
    assert refused.limit == "requests_per_minute"
    assert refused.retry_after_s == pytest.approx(10, abs=rig.slack())  # the one at +10 s leaves at +70 s


async def test_requests_per_minute_are_counted_per_tenant(rig: Rig) -> None:
    assert (await rig.admit(rpm(1))).ok
    assert not (await rig.admit(rpm(1))).ok
    assert (await rig.admit(Limits("other", requests_per_minute=1))).ok


async def test_a_minute_later_every_request_has_left_the_window(rig: Rig) -> None:
    for _ in range(5):
        assert (await rig.admit(rpm(5))).ok
    assert not (await rig.admit(rpm(5))).ok
    await rig.advance(60)
    for _ in range(5):
        assert (await rig.admit(rpm(5))).ok
    assert not (await rig.admit(rpm(5))).ok


# --- tokens per minute ---------------------------------------------------------------------------------------------


async def test_tokens_per_minute_counts_estimates_and_corrects_them_on_settlement(rig: Rig) -> None:
    limits = tpm(100, tokens=40)
    first = await rig.admit(limits)
    await rig.settle(limits, first, Charge("a", 1, tokens=10))  # it used 10, not the 40 estimated
    await rig.advance(20)
    assert (await rig.admit(limits)).ok  # 50 of 100
    await rig.advance(10)
    assert (await rig.admit(limits)).ok  # 90: without the correction it would be 120
    refused = await rig.admit(limits)  # 130: room once the second at +20 s leaves, at +80 s
    assert (refused.ok, refused.limit) == (False, "tokens_per_minute")
    assert refused.retry_after_s == pytest.approx(50, abs=rig.slack(1))
    assert not (await rig.admit(tpm(100, tokens=11))).ok
    assert (await rig.admit(tpm(100, tokens=10))).ok  # exactly 100


async def test_tokens_age_out_of_the_minute(rig: Rig) -> None:
    assert (await rig.admit(tpm(100, tokens=100))).ok
    assert not (await rig.admit(tpm(100, tokens=1))).ok
    await rig.advance(55)  # Redis counts tokens per whole second, on its own clock: keep clear of the boundary
    assert not (await rig.admit(tpm(100, tokens=1))).ok
    await rig.advance(5)
    assert (await rig.admit(tpm(100, tokens=100))).ok


async def test_a_request_over_the_whole_token_limit_waits_a_minute(rig: Rig) -> None:
    refused = await rig.admit(tpm(100, tokens=101))
    assert (refused.ok, refused.limit, refused.retry_after_s) == (False, "tokens_per_minute", 60)


# --- budgets -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("window", ["day", "month"])
async def test_a_budget_reserves_then_refuses_what_would_go_over(rig: Rig, window: str) -> None:
    limits = budget(300, **{window: 1000})
    admitted = [await rig.admit(limits) for _ in range(3)]
    assert [a.remaining[window] for a in admitted] == [700, 400, 100]
    refused = await rig.admit(limits)
    assert (refused.ok, refused.limit, refused.remaining) == (False, window, {window: 100})
    resets = at(2026, 11, 26) if window == "day" else at(2026, 12, 1)
    assert refused.retry_after_s == pytest.approx(resets - NOON)
    spend = await rig.spend(window)
    assert (spend.spent, spend.reserved, spend.period) == (0, 900, "2026-11-25" if window == "day" else "2026-11")
    assert (await rig.admit(budget(100, **{window: 1000}))).ok  # exactly up to the limit
    assert not (await rig.admit(budget(1, **{window: 1000}))).ok


@pytest.mark.parametrize("window", ["day", "month"])
async def test_settling_turns_the_reservation_into_the_real_cost_smaller_or_larger(rig: Rig, window: str) -> None:
    limits = budget(300, **{window: 1000})
    cheap, dear = await rig.admit(limits), await rig.admit(limits)
    await rig.settle(limits, cheap, Charge("a", cost=120, tokens=12))
    spend = await rig.spend(window)
    assert (spend.spent, spend.reserved) == (120, 300)
    await rig.settle(limits, dear, Charge("a", cost=500, tokens=50))  # dearer than reserved: counted in full
    spend = await rig.spend(window)
    assert (spend.spent, spend.reserved) == (620, 0)
    assert spend.upstreams == {"a": {"cost": 620, "tokens": 62, "requests": 2}}
    assert (await rig.admit(budget(380, **{window: 1000}))).remaining == {window: 0}
    refused = await rig.admit(budget(1, **{window: 1000}))
    assert (refused.ok, refused.remaining) == (False, {window: 0})


async def test_an_overshoot_past_the_limit_refuses_everything_after_it(rig: Rig) -> None:
    limits = budget(100, day=1000)
    admission = await rig.admit(limits)
    await rig.settle(limits, admission, Charge("a", cost=1500))
    refused = await rig.admit(budget(0, day=1000))
    assert (refused.ok, refused.limit, refused.remaining) == (False, "day", {"day": 0})
    assert (await rig.spend()).spent == 1500


async def test_a_failed_request_releases_its_reservation_and_costs_nothing(rig: Rig) -> None:
    limits = budget(600, day=1000)
    failed = await rig.admit(limits)
    assert not (await rig.admit(limits)).ok
    await rig.settle(limits, failed, Charge())
    spend = await rig.spend()
    assert (spend.spent, spend.reserved, spend.upstreams) == (0, 0, {})
    assert (await rig.admit(limits)).ok


async def test_day_and_month_are_both_checked_and_both_charged(rig: Rig) -> None:
    limits = budget(300, day=1000, month=500)
    first = await rig.admit(limits)
    assert first.remaining == {"day": 700, "month": 200}
    refused = await rig.admit(limits)
    assert (refused.ok, refused.limit) == (False, "month")
    await rig.settle(limits, first, Charge("a", cost=250))
    for window in ("day", "month"):
        spend = await rig.spend(window)
        assert (spend.spent, spend.reserved) == (250, 0)


async def test_concurrent_admissions_never_reserve_past_the_budget(rig: Rig) -> None:
    limits = budget(100, day=1000)
    answers = await asyncio.gather(*(rig.admit(limits) for _ in range(50)))
    assert sum(a.ok for a in answers) == 10
    assert {a.limit for a in answers if not a.ok} == {"day"}
    assert (await rig.spend()).reserved == 1000


# --- atomicity -----------------------------------------------------------------------------------------------------


async def test_a_refused_admission_counts_and_reserves_nothing(rig: Rig) -> None:
    def limits(cost: int) -> Limits:
        return Limits(TENANT, requests_per_minute=2, tokens_per_minute=100, tokens=50, budgets=(("day", 1000),),
                      cost=cost)

    assert (await rig.admit(limits(600))).ok
    refused = await rig.admit(limits(600))  # over the budget: must not count as a request nor as tokens
    assert refused.limit == "day"
    assert (await rig.admit(limits(400))).ok  # the second request of two, the second 50 tokens of 100
    refused = await rig.admit(limits(0))
    assert refused.limit == "requests_per_minute"  # and, refused, reserves nothing
    spend = await rig.spend()
    assert (spend.spent, spend.reserved) == (0, 1000)


async def test_a_refusal_by_the_month_reserves_nothing_in_the_day(rig: Rig) -> None:
    refused = await rig.admit(budget(600, day=10_000, month=500))
    assert (refused.ok, refused.limit) == (False, "month")
    assert (await rig.spend("day")).reserved == 0
    assert (await rig.spend("month")).reserved == 0


# --- reservations of a holder that never settles ------------------------------------------------------------------


async def test_a_crashed_holders_reservation_expires_after_the_ttl(rig: Rig) -> None:
    limits = budget(600, day=1000)
    assert (await rig.admit(limits)).ok  # its holder dies: never settled
    ttl_s = RESERVATION_TTL_MS // 1000
    await rig.advance(ttl_s - 1)
    assert not (await rig.admit(limits)).ok
    await rig.advance(1)
    admitted = await rig.admit(limits)
    assert admitted.ok
    assert admitted.remaining == {"day": 400}
    assert (await rig.spend()).reserved == 600


async def test_spend_read_back_leaves_out_expired_reservations(rig: Rig, request: pytest.FixtureRequest) -> None:
    assert (await rig.admit(budget(600, day=1000))).ok
    await rig.advance(RESERVATION_TTL_MS // 1000)
    assert (await rig.spend()).reserved == 0


# --- read back -----------------------------------------------------------------------------------------------------


async def test_spend_is_read_back_per_upstream_with_savings(rig: Rig) -> None:
    limits = budget(1000, day=1_000_000)
    for upstream, cost, tokens, savings in [("a", 100, 10, 50), ("b", 7, 3, 0), ("a", 200, 20, 25)]:
        await rig.settle(limits, await rig.admit(limits), Charge(upstream, cost, tokens, savings))
    for window in ("day", "month"):
        spend = await rig.spend(window)
        assert (spend.tenant, spend.window, spend.spent, spend.reserved, spend.savings) == (TENANT, window, 307, 0, 75)
        assert spend.upstreams == {"a": {"cost": 300, "tokens": 30, "requests": 2},
                                   "b": {"cost": 7, "tokens": 3, "requests": 1}}
    nothing = await rig.spend(tenant="other")
    assert (nothing.spent, nothing.reserved, nothing.savings, nothing.upstreams) == (0, 0, 0, {})


async def test_a_request_without_a_budget_is_still_charged(rig: Rig) -> None:
    limits = rpm(10)
    await rig.settle(limits, await rig.admit(limits), Charge("a", 42, 5))
    assert (await rig.spend()).upstreams == {"a": {"cost": 42, "tokens": 5, "requests": 1}}


# --- periods -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("window", "last_second", "first_second", "periods"), [
    ("day", at(2026, 11, 25, 23, 59, 59), at(2026, 11, 26), ("2026-11-25", "2026-11-26")),
    ("month", at(2026, 11, 30, 23, 59, 59), at(2026, 12, 1), ("2026-11", "2026-12")),
    ("month", at(2026, 12, 31, 23, 59, 59), at(2027, 1, 1), ("2026-12", "2027-01")),
])
async def test_a_new_utc_period_starts_with_the_whole_budget(rig: Rig, window: str, last_second: float,
                                                             first_second: float, periods: tuple[str, str]) -> None:
    limits = budget(1000, **{window: 1000})
    rig.now = last_second
    await rig.settle(limits, await rig.admit(limits), Charge("a", 1000))
    refused = await rig.admit(limits)
    assert (refused.ok, refused.retry_after_s) == (False, pytest.approx(1))  # it resets in one second
    rig.now = first_second
    fresh = await rig.spend(window)
    assert (fresh.period, fresh.spent) == (periods[1], 0)
    assert (await rig.admit(limits)).ok
    rig.now = last_second
    old = await rig.spend(window)
    assert (old.period, old.spent) == (periods[0], 1000)


async def test_the_month_keeps_counting_across_days(rig: Rig) -> None:
    limits = budget(400, day=500, month=1000)
    for day in (24, 25):
        rig.now = at(2026, 11, day, 12)
        await rig.settle(limits, await rig.admit(limits), Charge("a", 400))
    rig.now = at(2026, 11, 26, 12)
    refused = await rig.admit(limits)  # a new day, but the month has only 200 left
    assert (refused.ok, refused.limit, refused.remaining) == (False, "month", {"month": 200})
    assert (await rig.spend("day")).spent == 0
    assert (await rig.spend("month")).spent == 800




async def test_a_settlement_after_its_reservation_expired_still_counts_once(rig: Rig) -> None:
    limits = budget(600, day=1000)
    admission = await rig.admit(limits)
    await rig.advance(RESERVATION_TTL_MS // 1000)
    assert (await rig.spend()).reserved == 0  # its holder was presumed gone
    await rig.settle(limits, admission, Charge("a", 500))
    if isinstance(rig.backend, RedisBackend):
        await rig.settle(limits, admission, Charge("a", 500))  # a batch resent after its reply was lost
    spend = await rig.spend()
    assert (spend.spent, spend.reserved) == (500, 0)


# --- bounds: no report can overflow or sink a counter ------------------------------------------------------------


async def test_a_charge_past_every_counter_saturates_instead_of_overflowing(rig: Rig) -> None:
    limits = budget(100, day=MOST)
    for _ in range(2):  # the second would overflow a signed 64-bit counter twice over
        await rig.settle(limits, await rig.admit(limits), Charge("a", 2**70, 2**70, -(2**70)))
    spend = await rig.spend()
    assert (spend.spent, spend.reserved, spend.savings) == (MOST, 0, -MOST)
    assert spend.upstreams["a"] == {"cost": MOST, "tokens": MOST, "requests": 2}
    refused = await rig.admit(limits)  # spent, not wrapped round to an unlimited budget
    assert (refused.ok, refused.limit, refused.remaining) == (False, "day", {"day": 0})


async def test_a_negative_charge_cannot_lower_the_spend(rig: Rig) -> None:
    limits = budget(100, day=10_000)
    await rig.settle(limits, await rig.admit(limits), Charge("a", 300, 10))
    await rig.settle(limits, await rig.admit(limits), Charge("a", -(10**19), -(10**19)))
    spend = await rig.spend()
    assert (spend.spent, spend.reserved) == (300, 0)
    assert spend.upstreams["a"] == {"cost": 300, "tokens": 10, "requests": 2}


async def test_a_token_correction_cannot_sink_the_minute_below_zero(rig: Rig) -> None:
    limits = tpm(100, 50)
    admitted = await rig.admit(limits)
    await rig.settle(limits, admitted, Charge("a", 0, -(10**19)))  # counted as 0 tokens: the 50 estimated go
    assert (await rig.admit(tpm(100, 100))).ok  # the whole minute is free again, not more than whole


async def test_an_admission_reports_what_is_left_of_each_rate_limit(rig: Rig) -> None:
    limits = Limits(TENANT, requests_per_minute=3, tokens_per_minute=100, tokens=40)
    first = await rig.admit(limits)
    assert first.rates["requests"] == Rate(2, 60.0)
    assert first.rates["tokens"].remaining == 60
    assert 59 <= first.rates["tokens"].reset_s <= 60
    await rig.advance(10)
    second = await rig.admit(limits)
    assert (second.rates["requests"].remaining, second.rates["tokens"].remaining) == (1, 20)
    await rig.advance(10)
    refused = await rig.admit(limits)  # 40 tokens more than the minute has left
    assert (refused.ok, refused.limit) == (False, "tokens_per_minute")
    assert refused.rates["requests"] == Rate(1, pytest.approx(50.0, abs=1))  # the newest leaves in 50 s
    assert refused.rates["tokens"].remaining == 20
    assert 49 <= refused.rates["tokens"].reset_s <= 50
    assert (await rig.admit(budget(1, day=10))).rates == {}  # no rate limit, nothing to report


async def test_a_refusal_by_one_rate_limit_tells_what_is_left_of_the_other(rig: Rig) -> None:
    limits = Limits(TENANT, requests_per_minute=1, tokens_per_minute=100, tokens=40)
    assert (await rig.admit(limits)).ok
    refused = await rig.admit(limits)
    assert (refused.ok, refused.limit) == (False, "requests_per_minute")
    assert refused.rates["requests"].remaining == 0
    assert refused.rates["tokens"].remaining == 60
