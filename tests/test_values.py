"""gateway.values: records frozen to the type checker, slotted and hashable at run time."""

from __future__ import annotations

import dataclasses

import pytest

from gateway.values import value


@value
class Point:
    x: int
    y: int = 0


def test_a_value_is_a_slotted_hashable_dataclass() -> None:
    point = Point(1)
    assert dataclasses.is_dataclass(point)
    assert (point.x, point.y) == (1, 0)
    assert hash(point) == hash(Point(1, 0))
    assert point == Point(1) != Point(2)
    with pytest.raises(AttributeError):
        point.z = 3  # type: ignore[attr-defined]  # slotted: no new attributes
