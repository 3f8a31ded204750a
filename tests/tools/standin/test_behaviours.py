"""The fault server's script entries are fixed values, and an arrival knows when its client left."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from gateway.tools.standin import Arrival, Behaviour, Json, Sse, Status


def test_every_behaviour_is_a_frozen_dataclass() -> None:
    for behaviour in typing.get_args(Behaviour):
        assert dataclasses.is_dataclass(behaviour)
        assert behaviour.__dataclass_params__.frozen, behaviour  # type: ignore[attr-defined]


def test_a_behaviour_cannot_change_once_scripted() -> None:
    status = Status(503)
    with pytest.raises(dataclasses.FrozenInstanceError):
        status.status = 200  # type: ignore[misc]


def test_defaults_are_a_normal_answer_and_a_whole_stream() -> None:
    assert (Json().content, Json().prompt_tokens, Json().completion_tokens) == (None, 7, 3)
    stream = Sse((b"data: {}\n\n",))
    assert (stream.done, stream.cut_after, stream.stall_after, stream.reset) == (True, None, None, False)


def test_an_arrival_is_closed_once_its_client_left() -> None:
    arrival = Arrival(1.0, "/v1/chat/completions", {}, {})
    assert not arrival.closed
    arrival.closed_at = 2.0
    assert arrival.closed
