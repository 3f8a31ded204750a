"""gateway.pipeline.record: what a request's answer headers and audit record say of it."""

from __future__ import annotations

from gateway.accounting.usage import Usage
from gateway.pipeline.record import Record


def test_a_fresh_record_tells_only_the_request_id_and_the_policy() -> None:
    record = Record("req-1", "abc123", "chat")
    assert record.tell() == [(b"x-request-id", b"req-1"), (b"x-switchyard-policy", b"abc123")]


def test_a_decided_and_served_record_tells_who_served_it_and_why() -> None:
    record = Record("req-1", "abc123", "chat")
    record.route, record.rule, record.data_class, record.spilled_from = "chat", "default", "public", "primary"
    record.upstream, record.region = "fallback", "eu-west"
    record.rate_headers = [(b"x-ratelimit-limit-requests", b"60")]
    assert dict(record.tell()) == {
        b"x-request-id": b"req-1", b"x-switchyard-policy": b"abc123", b"x-switchyard-upstream": b"fallback",
        b"x-switchyard-region": b"eu-west", b"x-switchyard-data-class": b"public", b"x-switchyard-rule": b"default",
        b"x-switchyard-spilled-from": b"primary", b"x-ratelimit-limit-requests": b"60"}


def test_charges_add_up_over_the_parts_of_an_answer() -> None:
    record = Record("req-1", "abc123", "chat")
    record.charge(Usage(10, 5, cache_read_tokens=4), 0.25)
    record.charge(Usage(15, 7, cache_read_tokens=1, cache_write_tokens=6, cache_write_1h_tokens=2), 0.5)
    assert (record.usage, record.cost) == (Usage(25, 12, 5, 6, 2), 0.75)
    fields = record.audit_fields(0.0125)
    tokens = {"prompt": 25, "completion": 12, "cache_read": 5, "cache_write": 6, "cache_write_1h": 2}
    assert (fields["tokens"], fields["cost_usd"], fields["ms"]) == (tokens, 0.75, 12.5)


def test_an_error_answer_without_an_outcome_is_named_by_its_status() -> None:
    record = Record("req-1", "abc123", "embeddings")
    record.status = 404
    fields = record.audit_fields(0.001)
    assert (fields["endpoint"], fields["outcome"], fields["status"]) == ("embeddings", "error:http_404", 404)
    assert "capacity" not in fields
    record.outcome = "error:rate_limited"
    assert record.audit_fields(0.001)["outcome"] == "error:rate_limited"
