"""gateway.state.redis_scripts: the calls' wire layout and the decoding of ADMIT's replies, without a server (the
scripts themselves run against a real Redis in tests/state/test_redis.py)."""

from __future__ import annotations

import pytest

from gateway.state.base import RESERVATION_TTL_MS, Limits, Rate
from gateway.state.redis_scripts import (
    ADMIT,
    admit_template,
    decode_admission,
    decode_rates,
    fixed,
    settlement_row,
    sha1,
    text,
)
from gateway.state.resp import encode

NOW = 1_800_000_000.0


def test_the_sha1_is_what_redis_names_the_script_by() -> None:
    assert sha1("return 1") == "e0e1f9fabfc9d4800c877a703b823ac0578ff8db"
    assert len(sha1(ADMIT)) == 40


def test_a_settlement_row_carries_the_id_length_so_ids_with_spaces_parse() -> None:
    row = settlement_row("id with space", 5, "day,month", "up", 7, 9, 0, -2, 60)
    head, _, rest = row.partition(" 13 ")  # the id's length in bytes, then id and upstream run together
    assert head == "5 day,month 7 9 0 -2 60"
    assert rest == "id with spaceup"


def test_fixed_arguments_are_resp_without_a_count_and_with_percent_doubled() -> None:
    assert fixed(["a%b", 5]) == b"$3\r\na%%b\r\n$1\r\n5\r\n"


def test_the_admit_template_filled_in_is_the_call_encoded_whole() -> None:
    limits = Limits("acme%1", requests_per_minute=10, budgets=(("day", 1000),))
    names = [f"key{i}" for i in range(6)]  # the seventh key is the undo marker, filled in with the id
    template, marker_length = admit_template("abc", names, limits)
    marker = b"sy:{acme%1}:done:"
    assert marker_length == len(marker)
    filled = template % (len(marker) + 2, b"r1", 2, b"40", 3, b"123", 2, b"r1")
    assert filled == encode(["EVALSHA", "abc", 7, *names, marker + b"r1", 10, -1, b"40", 1000, -1, b"123", b"r1",
                             RESERVATION_TTL_MS, 3 * 86400, 40 * 86400])


def test_an_admitted_reply_is_decoded_with_what_is_left() -> None:
    admission = decode_admission([1, b"", 0, 700, 0, 42, 9, 1500, -1, 0], "r1", Limits("acme"), NOW)
    assert (admission.ok, admission.reservation, dict(admission.remaining), admission.bucket) == (
        True, "r1", {"day": 700}, 42)
    assert dict(admission.rates) == {"requests": Rate(9, 1.5)}


def test_a_refusal_by_a_rate_limit_waits_as_the_script_says() -> None:
    admission = decode_admission([0, b"requests_per_minute", 2500, 0, 0, 0], "r1", Limits("acme"), NOW)
    assert (admission.ok, admission.limit, admission.retry_after_s, dict(admission.rates)) == (
        False, "requests_per_minute", 2.5, {})


def test_a_refusal_by_a_budget_waits_for_the_window_to_reset() -> None:
    admission = decode_admission([0, b"day", 0, -5, 0, 0], "r1", Limits("acme"), NOW)
    assert (admission.ok, admission.limit, dict(admission.remaining)) == (False, "day", {"day": 0})
    assert 0 < admission.retry_after_s <= 86400


@pytest.mark.parametrize(("reply", "expected"), [
    ([0] * 6 + [-1, 0, -1, 0], {}),
    ([0] * 6 + [-1, 0, 30, 2000], {"tokens": Rate(30, 2.0)}),
    ([0] * 6 + [4, 1000, 30, 2000], {"requests": Rate(4, 1.0), "tokens": Rate(30, 2.0)}),
])
def test_rates_are_decoded_only_for_the_limits_there_are(reply: list[int], expected: dict[str, Rate]) -> None:
    assert decode_rates(reply) == expected


def test_reply_texts_are_text_whether_bytes_or_str() -> None:
    assert (text(b"day"), text("day")) == ("day", "day")
