"""Verifying an audit trail: every removal, edit, forgery, repeat and swap is named, with and without the key."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from gateway.operations.audit import GENESIS, AuditLog, FileSink, Seal
from gateway.operations.audit_verify import verify
from gateway.operations.metrics import Metrics
from gateway.tools.cli import main


def verify_cli(*args: str) -> int:
    return main(["audit", "verify", *args])


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


async def test_stream_mode_checks_lines_a_collector_kept_from_mid_chain(tmp_path: Path) -> None:
    (path,) = await write_trail(tmp_path / "a.jsonl", 30, Seal(KEY_BYTES))
    lines = path.read_bytes().splitlines(keepends=True)[11:]  # no anchor: the collector started at seq 11
    kept = [("collected", lines)]
    assert list(verify(kept, Seal(KEY_BYTES), stream=True)) == []
    assert list(verify([("collected", lines[:5] + lines[6:])], Seal(KEY_BYTES), stream=True)) == [
        "collected:6: chain " + orjson.loads(lines[0])["chain"] + " jumps from seq 15 to 17 (records removed)"]
    headless = "collected:1: the file does not begin with an anchor line (its first lines were removed)"
    assert next(verify(kept, Seal(KEY_BYTES))) == headless


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
