"""A client stream's events rewritten: one identity across continued parts, a stripped event's fields carried."""

from __future__ import annotations

import orjson

from gateway.delivery.chunks import carried, carry, identity_of, restamp


def chunk(**fields: object) -> bytes:
    return b"data: " + orjson.dumps(fields) + b"\n\n"


def test_restamp_rewrites_only_the_data_of_a_continued_part() -> None:
    event = b'id: 7\ndata: {"id": "second", "choices": []}\n\n'
    assert restamp(event, {"id": "first"}) == b'id: 7\ndata: {"id":"first","choices":[]}\n\n'


def test_restamp_leaves_comments_done_and_events_without_identity_alone() -> None:
    events = b": keepalive\n\n" + chunk(id="b", created=2, model="m2", choices=[]) + b"data: [DONE]\n\n"
    stamped = restamp(events, {"id": "a", "created": 1, "model": "m1", "system_fingerprint": "fp"})
    assert stamped == (b": keepalive\n\n" + b'data: {"id":"a","created":1,"model":"m1","choices":[]}\n\n'
                       + b"data: [DONE]\n\n")
    assert restamp(events, {}) == events


def test_identity_of_is_the_first_event_with_an_id_and_keeps_only_well_typed_fields() -> None:
    events = (b": hello\n\n" + chunk(choices=[]) + chunk(id="c1", created="soon", model="m", system_fingerprint="fp")
              + chunk(id="c2", created=5, model="other"))
    assert identity_of(events) == {"id": "c1", "model": "m", "system_fingerprint": "fp"}
    assert identity_of(b"data: [DONE]\n\n") == {}


def test_carried_is_what_a_usage_event_held_besides_the_usage() -> None:
    usage_event = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [],
                   "usage": {"prompt_tokens": 1}, "system_fingerprint": "fp", "timings": {"n": 2}, "empty": None}
    assert carried(usage_event) == {"system_fingerprint": "fp", "timings": {"n": 2}}


def test_carry_adds_fields_to_the_last_finishing_event_and_its_own_values_win() -> None:
    first = chunk(id="c", choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}])
    last = chunk(id="c", choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}], system_fingerprint="own")
    events = first + last + b"data: [DONE]\n\n"
    out = carry(events, {"system_fingerprint": "carried", "timings": {"n": 2}})
    parts = out.split(b"\n\n")
    assert parts[0] + b"\n\n" == first
    assert orjson.loads(parts[1][6:]) == {**orjson.loads(last[6:]), "timings": {"n": 2}}
    assert parts[2] == b"data: [DONE]"
    assert carry(events, {}) == events


def test_carry_changes_nothing_when_no_event_finishes() -> None:
    events = chunk(id="c", choices=[{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}])
    assert carry(events, {"timings": {"n": 2}}) == events
