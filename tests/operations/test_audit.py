"""The audit trail: one chained record per request that tells its whole story, and verify catches tampering."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import openai
import orjson
import pytest

from gateway.operations.audit import GENESIS, SAMPLE_S, FileSink, Seal, read_key
from gateway.operations.audit_verify import verify
from gateway.tools.cli import main
from gateway.tools.standin import Fault
from tests.conftest import KEY, OTHER_KEY, Loop, Stack, key_hash, start_stack, wait_for

HELLO = [{"role": "user", "content": "Hello, my card is 4111 1111 1111 1111"}]
PLAIN = [{"role": "user", "content": "Hello"}]


def audited(loop: Loop, tmp_path: Path) -> tuple[Stack, Path]:
    trail = tmp_path / "audit" / "trail.jsonl"
    tenants = {"acme": {"keys": [key_hash(KEY)], "regions": ["eu-west", "us"]},
               "poor": {"keys": [key_hash(OTHER_KEY)], "budget": {"usd_per_day": 0.0}}}
    stack = start_stack(
        loop, tmp_path, settings={"audit": (str(trail),)}, tenants=tenants,
        data_classes={"public": {}, "personal": {"hosting": ["self"]}},
        classify={"detectors": [{"detect": ["credit_card"], "class": "personal"}]},
        upstream_primary={"api_key": "sk-provider-secret-123"},
        upstream_fallback={"hosting": "third_party", "region": "us"})
    return stack, trail


def records(trail: Path, count: int) -> list[dict[str, object]]:
    """The trail's records (its anchor line left out), once there are count of them."""
    wait_for(lambda: trail.exists() and len(trail.read_bytes().splitlines()) > count, what=f"{count} audit records")
    return [orjson.loads(line) for line in trail.read_bytes().splitlines()[1:]]


def test_records_tell_the_story_of_each_request(loop: Loop, tmp_path: Path) -> None:
    stack, trail = audited(loop, tmp_path)
    client = stack.client()
    stack.upstreams["primary"].faults.extend([Fault(status=503), Fault(status=503)])
    client.chat.completions.create(model="chat", messages=PLAIN)
    stack.upstreams["primary"].faults.extend([Fault(status=503), Fault(status=503)])
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(model="chat", messages=HELLO)
    with pytest.raises(openai.RateLimitError):
        stack.client(OTHER_KEY).chat.completions.create(model="chat", messages=PLAIN)
    fallback, denied, broke = records(trail, 3)
    assert fallback["outcome"] == "ok"
    assert fallback["upstream"] == "fallback"
    assert [a["outcome"] for a in fallback["attempts"]] == ["http_503", "http_503", "ok"]  # type: ignore[union-attr]
    assert [a["region"] for a in fallback["attempts"]] == ["eu-west", "eu-west", "us"]  # type: ignore[union-attr]
    assert fallback["tokens"] == {"prompt": 10, "completion": 9, "cache_read": 0, "cache_write": 0,
                                  "cache_write_1h": 0}
    assert fallback["cost_usd"] == pytest.approx((10 * 1.0 + 9 * 2.0) / 1e6)
    assert denied["data_class"] == "personal"
    assert denied["outcome"] == "error:residency_unavailable"
    assert {"upstream": "fallback", "reason": "data_class"} in denied["excluded"]  # type: ignore[operator]
    assert broke["outcome"] == "error:budget_exhausted"
    assert broke["tenant"] == "poor"
    text = trail.read_text()
    assert "4111 1111" not in text  # hashes in the chain are hex and may hold "4111"
    assert "Hello" not in text
    assert "sk-provider-secret" not in text
    assert KEY not in text


def verify_cli(*args: str) -> int:
    return main(["audit", "verify", *args])


def test_verify_passes_a_whole_trail_and_catches_a_removed_or_edited_line(loop: Loop, tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    stack, trail = audited(loop, tmp_path)
    for _ in range(4):
        stack.client().chat.completions.create(model="chat", messages=PLAIN)
    lines = trail.read_bytes().splitlines(keepends=True) if records(trail, 4) else []
    assert b'"anchor"' in lines[0]
    assert verify_cli(str(trail)) == 0
    assert "ok (unkeyed): 0 break(s)" in capsys.readouterr().out
    removed = tmp_path / "removed.jsonl"
    removed.write_bytes(b"".join(lines[:2] + lines[3:]))
    assert verify_cli(str(removed)) == 1
    assert "jumps from seq 1 to 3" in capsys.readouterr().out
    edited = tmp_path / "edited.jsonl"
    edited.write_bytes(b"".join([*lines[:2], lines[2].replace(b'"status":200', b'"status":201'), *lines[3:]]))
    assert verify_cli(str(edited)) == 1
    assert f"{edited}:3: the seal does not match" in capsys.readouterr().out


def test_unauthenticated_requests_are_counted_in_one_sampled_record_a_second(loop: Loop, tmp_path: Path) -> None:
    stack, trail = audited(loop, tmp_path)
    started = time.monotonic()
    for _ in range(60):
        with pytest.raises(openai.AuthenticationError):
            stack.client("sk-sy-nobody-0123456789abcdef0123456789").chat.completions.create(model="chat",
                                                                                            messages=PLAIN)
    stack.client().chat.completions.create(model="chat", messages=PLAIN)
    assert stack.gateway.metrics.registry.get_sample_value("switchyard_audit_unauthenticated_total") == 60
    loop.stop(stack.served)  # the last sample is written on the way out
    elapsed = time.monotonic() - started
    written = [orjson.loads(line) for line in trail.read_bytes().splitlines()][1:]
    sampled = [r for r in written if r["status"] == 401]
    assert sum(r["sampled"]["unauthenticated"] for r in sampled) == 60  # type: ignore[index]
    assert len(sampled) <= elapsed / SAMPLE_S + 2
    assert len(written) == len(sampled) + 1
    assert list(verify([(str(trail), trail.read_bytes().splitlines())], Seal(None))) == []


def test_an_audit_key_shorter_than_16_bytes_is_refused(tmp_path: Path) -> None:
    key_file = tmp_path / "short.key"
    key_file.write_text("short\n")
    with pytest.raises(ValueError, match="at least 16 bytes"):
        read_key(str(key_file))


@pytest.mark.parametrize("chosen", ["../../etc", "a/b", "id with space", "x" * 129, "..", "ok..no", "tab\tid"])
def test_a_client_request_id_outside_the_safe_characters_is_replaced(loop: Loop, tmp_path: Path, chosen: str) -> None:
    stack, trail = audited(loop, tmp_path)
    answer = stack.client().chat.completions.with_raw_response.create(model="chat", messages=PLAIN,
                                                                      extra_headers={"x-request-id": chosen})
    given = answer.headers["x-request-id"]
    assert given != chosen
    assert stack.upstreams["primary"].seen[-1].headers["x-request-id"] == given
    (record,) = records(trail, 1)
    assert record["request_id"] == given


def test_a_client_request_id_of_safe_characters_is_kept(loop: Loop, tmp_path: Path) -> None:
    stack, trail = audited(loop, tmp_path)
    answer = stack.client().chat.completions.with_raw_response.create(
        model="chat", messages=PLAIN, extra_headers={"x-request-id": "req_2026-12-01.42"})
    assert answer.headers["x-request-id"] == "req_2026-12-01.42"
    assert records(trail, 1)[0]["request_id"] == "req_2026-12-01.42"


def test_a_file_sink_on_a_device_opens_without_reading_it() -> None:
    seal = Seal(b"0123456789abcdef0123456789abcdef")
    sink = FileSink("/dev/full", seal)  # reading /dev/full never ends: the sink must not look for a tail
    try:
        with pytest.raises(OSError, match="No space left on device"):
            sink.write([seal.line({"chain": "c", "seq": 1, "prev": GENESIS})[0]])
    finally:
        with contextlib.suppress(OSError):
            sink.close()