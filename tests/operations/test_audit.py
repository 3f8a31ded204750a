"""The audit trail: one chained record per request that tells its whole story, and verify catches tampering."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import openai
import orjson
import pytest

from gateway.operations.audit import GENESIS, SAMPLE_S, AuditLog, FileSink, Seal, read_key
from gateway.operations.audit_verify import verify
from gateway.operations.metrics import Metrics
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
    loop.stop(stack.served)  # the last sample is written on the way out
    elapsed = time.monotonic() - started
    written = [orjson.loads(line) for line in trail.read_bytes().splitlines()][1:]
    sampled = [r for r in written if r["status"] == 401]
    assert sum(r["sampled"]["unauthenticated"] for r in sampled) == 60  # type: ignore[index]
    assert len(sampled) <= elapsed / SAMPLE_S + 2
    assert len(written) == len(sampled) + 1
    assert list(verify([(str(trail), trail.read_bytes().splitlines())], Seal(None))) == []


KEY_BYTES = b"0123456789abcdef0123456789abcdef"


async def write_trail(path: Path, count: int, seal: Seal, max_bytes: int = 100 * 1024 * 1024) -> list[Path]:
    """count records through the audit log into a file sink; the files written, oldest first."""
    audit = AuditLog([FileSink(str(path), seal, max_bytes=max_bytes)], Metrics(), seal)
    for number in range(count):
        audit.record({"request_id": f"r{number}", "status": 200, "cost_usd": 0.001})
        if number % 10 == 9:
            await audit.flush()
    await audit.flush()
    audit.close()
    rotated = sorted(path.parent.glob(path.name + ".*"), key=lambda p: -int(p.suffix[1:]))
    return [*rotated, path]


def breaks(files: list[Path], key: bytes | None = KEY_BYTES) -> list[str]:
    return list(verify([(str(f), f.read_bytes().splitlines(keepends=True)) for f in files], Seal(key)))


def forge(fields: dict[str, object]) -> bytes:
    """A line sealed as an attacker without the key can: with a plain SHA-256, or with a key of their own."""
    return Seal(b"attacker-guess-0123456789").line(fields)[0]


async def test_an_edit_with_the_chain_recomputed_fails_without_the_key(tmp_path: Path) -> None:
    (path,) = await write_trail(tmp_path / "a.jsonl", 20, Seal(KEY_BYTES))
    assert breaks([path]) == []
    lines = path.read_bytes().splitlines()
    prev, rebuilt = orjson.loads(lines[1])["prev"], [lines[0]]
    for line in lines[1:]:  # cost set to zero everywhere, every link recomputed
        record = orjson.loads(line)
        record.pop("mac")
        record.update(cost_usd=0.0, prev=prev)
        for seal in (Seal(None), Seal(b"attacker-guess-0123456789")):
            sealed, mac = seal.line(record)
        rebuilt.append(sealed.rstrip())
        prev = mac
    path.write_bytes(b"\n".join(rebuilt) + b"\n")
    found = breaks([path])
    assert len(found) == 20
    assert all("the seal does not match" in problem for problem in found)


async def test_an_appended_forged_chain_fails(tmp_path: Path) -> None:
    (path,) = await write_trail(tmp_path / "a.jsonl", 5, Seal(KEY_BYTES))
    forged = [forge({"anchor": {"file": "a.jsonl", "chain": "evil", "seq": 1, "prev": GENESIS, "after": None}})]
    forged.append(forge({"request_id": "x", "status": 200, "chain": "evil", "seq": 1, "prev": GENESIS}))
    with path.open("ab") as file:
        file.write(b"".join(forged))
    found = breaks([path])
    assert [p.split(": ", 1)[0] for p in found] == [f"{path}:7", f"{path}:7", f"{path}:8"]
    assert "does not follow the line before it" in found[1]


async def test_removing_the_first_100_lines_fails(tmp_path: Path) -> None:
    (path,) = await write_trail(tmp_path / "a.jsonl", 150, Seal(KEY_BYTES))
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[100:]))
    assert breaks([path]) == [f"{path}:1: the file does not begin with an anchor line (its first lines were removed)"]
    path.write_bytes(b"".join(lines[:1] + lines[101:]))  # the anchor kept, the records after it removed
    assert "is not the record the anchor before it names" in breaks([path])[0]


async def test_each_rotated_file_is_anchored_to_the_end_of_the_one_before(tmp_path: Path) -> None:
    files = await write_trail(tmp_path / "a.jsonl", 200, Seal(KEY_BYTES), max_bytes=8 * 1024)
    assert len(files) >= 3
    assert breaks(files) == []
    middle = files[1].read_bytes().splitlines(keepends=True)
    files[1].write_bytes(b"".join(middle[:-3]))  # the tail of a rotated file removed
    found = breaks(files)
    assert found == [f"{files[2]}:1: the anchor does not follow the line before it (the end of the previous file "
                     "was removed)"]


async def test_a_keyed_trail_does_not_verify_without_its_key(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    (path,) = await write_trail(tmp_path / "a.jsonl", 3, Seal(KEY_BYTES))
    key_file = tmp_path / "audit.key"
    key_file.write_bytes(KEY_BYTES + b"\n")
    assert verify_cli(str(path), "--key-file", str(key_file)) == 0
    assert "ok (keyed)" in capsys.readouterr().out
    assert verify_cli(str(path)) == 1
    assert "(a keyed trail needs --key-file)" in capsys.readouterr().out


async def test_a_restarted_gateway_anchors_its_chain_to_the_end_of_the_file_it_appends_to(tmp_path: Path) -> None:
    (path,) = await write_trail(tmp_path / "a.jsonl", 5, Seal(KEY_BYTES))
    await write_trail(tmp_path / "a.jsonl", 5, Seal(KEY_BYTES))
    assert breaks([path]) == []
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:4] + lines[6:]))  # the first run's last records removed
    assert "does not follow the line before it" in breaks([path])[0]


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


async def test_stream_mode_checks_lines_a_collector_kept_from_mid_chain(tmp_path: Path) -> None:
    (path,) = await write_trail(tmp_path / "a.jsonl", 30, Seal(KEY_BYTES))
    lines = path.read_bytes().splitlines(keepends=True)[11:]  # no anchor: the collector started at seq 11
    kept = [("collected", lines)]
    assert list(verify(kept, Seal(KEY_BYTES), stream=True)) == []
    assert list(verify([("collected", lines[:5] + lines[6:])], Seal(KEY_BYTES), stream=True)) == [
        "collected:6: chain " + orjson.loads(lines[0])["chain"] + " jumps from seq 15 to 17 (records removed)"]
    headless = "collected:1: the file does not begin with an anchor line (its first lines were removed)"
    assert next(verify(kept, Seal(KEY_BYTES))) == headless


def test_a_file_sink_on_a_device_opens_without_reading_it() -> None:
    sink = FileSink("/dev/full", Seal(KEY_BYTES))  # reading /dev/full never ends: the sink must not look for a tail
    try:
        with pytest.raises(OSError, match="No space left on device"):
            sink.write([Seal(KEY_BYTES).line({"chain": "c", "seq": 1, "prev": GENESIS})[0]])
    finally:
        with contextlib.suppress(OSError):
            sink.close()


async def test_a_repeated_or_swapped_record_is_named_as_such(tmp_path: Path) -> None:
    (path,) = await write_trail(tmp_path / "a.jsonl", 10, Seal(KEY_BYTES))
    lines = path.read_bytes().splitlines(keepends=True)
    repeated = tmp_path / "repeated.jsonl"
    repeated.write_bytes(b"".join([*lines[:5], lines[4], *lines[5:]]))
    assert any("seq 4 comes after seq 4 (a record repeated or moved)" in b for b in breaks([repeated]))
    swapped = tmp_path / "swapped.jsonl"
    swapped.write_bytes(b"".join([*lines[:5], lines[6], lines[5], *lines[7:]]))
    found = breaks([swapped])
    assert any("jumps from seq 4 to 6" in b for b in found)
    assert any("seq 5 comes after seq 6 (a record repeated or moved)" in b for b in found)
