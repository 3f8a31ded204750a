"""What only the memory backend holds: periods that purge their dead reservations, and the wait for tokens.

The limits themselves are held to the same tests as Redis's in test_backends.py.
"""

from __future__ import annotations

import pytest

from gateway.state.base import Limits
from gateway.state.memory import MemoryBackend, Period, _token_wait
from tests.state.rig import NOON, TENANT


def test_a_purge_releases_only_reservations_past_their_expiry() -> None:
    held = Period(reserved=500, reservations={"gone": (300, 1_000.0), "alive": (200, 5_000.0)})
    held.purge(now_ms=1_000.0)
    assert (held.reserved, list(held.reservations)) == (200, ["alive"])


def test_a_purge_never_takes_the_reserved_total_below_zero() -> None:
    odd = Period(reserved=100, reservations={"big": (300, 0.0)})
    odd.purge(now_ms=1.0)
    assert odd.reserved == 0


@pytest.mark.parametrize(("buckets", "tokens", "wait"), [
    ({0: 60, 30: 40}, 0, None),  # fits now
    ({0: 60, 30: 40}, 50, 15.0),  # fits once second 0's 60 leave the minute (at 60, it is now 45)
    ({0: 60, 30: 40}, 70, 45.0),  # needs second 30's too
    ({0: 60, 30: 40}, 101, 60.0),  # more than the whole limit: a minute
])
def test_the_token_wait_is_until_enough_of_the_minute_has_left(buckets: dict[int, int], tokens: int,
                                                               wait: float | None) -> None:
    assert _token_wait(buckets, tokens, 100, second=45) == wait


async def test_the_backend_takes_now_as_given() -> None:
    backend = MemoryBackend()
    limits = Limits(TENANT, requests_per_minute=1)
    assert (await backend.admit(limits, "a", NOON)).ok
    assert not (await backend.admit(limits, "b", NOON + 59)).ok
    assert (await backend.admit(limits, "c", NOON + 60)).ok  # no clock of its own: a minute later by the caller's
