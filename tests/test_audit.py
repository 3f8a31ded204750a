"""The audit trail: one chained record per request that tells its whole story, and verify catches tampering."""

from __future__ import annotations

from pathlib import Path

import openai
import orjson
import pytest

from gateway.audit import verify
from gateway.cli import main
from gateway.standin import Fault
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
    wait_for(lambda: trail.exists() and len(trail.read_bytes().splitlines()) >= count, what=f"{count} audit records")
    return [orjson.loads(line) for line in trail.read_bytes().splitlines()]


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
    assert fallback["tokens"] == {"prompt": 10, "completion": 9}
    assert fallback["cost_usd"] == pytest.approx((10 * 1.0 + 9 * 2.0) / 1e6)
    assert denied["data_class"] == "personal"
    assert denied["outcome"] == "error:residency_unavailable"
    assert {"upstream": "fallback", "reason": "data_class"} in denied["excluded"]  # type: ignore[operator]
    assert broke["outcome"] == "error:budget_exhausted"
    assert broke["tenant"] == "poor"
    text = trail.read_text()
    assert "4111" not in text
    assert "Hello" not in text
    assert "sk-provider-secret" not in text
    assert KEY not in text


def test_verify_passes_a_whole_trail_and_catches_a_removed_or_edited_line(loop: Loop, tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    stack, trail = audited(loop, tmp_path)
    for _ in range(4):
        stack.client().chat.completions.create(model="chat", messages=PLAIN)
    lines = trail.read_bytes().splitlines(keepends=True) if records(trail, 4) else []
    assert list(verify(lines)) == []
    assert main(["audit", "verify", str(trail)]) == 0
    removed = tmp_path / "removed.jsonl"
    removed.write_bytes(b"".join(lines[:1] + lines[2:]))
    assert main(["audit", "verify", str(removed)]) == 1
    assert "jumps from seq 1 to 3" in capsys.readouterr().out
    edited = tmp_path / "edited.jsonl"
    edited.write_bytes(b"".join([lines[0], lines[1].replace(b'"status":200', b'"status":201'), *lines[2:]]))
    assert main(["audit", "verify", str(edited)]) == 1
    assert "seq 3 does not follow" in capsys.readouterr().out
