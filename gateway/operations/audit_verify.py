"""Check audit files: every seal, every chain link, and every file's anchor (`switchyard audit verify`)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import orjson

from gateway.operations.audit import GENESIS, Seal, unseal

START = "start"  # the mac "before" the first line given: none to compare an anchor with


class Verifier:
    """Reads files oldest first and says where the trail was edited, forged or cut."""

    def __init__(self, seal: Seal, stream: bool = False) -> None:
        self.seal = seal
        self.stream = stream  # lines from a log collector: no anchors, a chain may begin mid-way
        self.chains: dict[str, tuple[str, int]] = {}  # chain -> (mac, seq) of its last record
        self.before: str | None = START
        self.pending: tuple[str, int, str] | None = None  # what the last anchor says comes next
        self._mac = ""  # of the line being read

    def file(self, name: str, lines: Iterable[bytes]) -> Iterator[str]:
        """Every break in one file's lines."""
        first = True
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            where = f"{name}:{number}"
            record, problem = self._open(line)
            if problem:
                yield f"{where}: {problem}"
            if record is None:
                continue
            if "anchor" in record:
                yield from self._anchor(where, record["anchor"])
            else:
                headless = first and not self.stream
                if headless:
                    yield f"{where}: the file does not begin with an anchor line (its first lines were removed)"
                yield from self._record(where, record, said=headless)
            first = False

    def _open(self, line: bytes) -> tuple[dict[str, Any] | None, str]:
        """The line's record (None if it is not one) and what is wrong with its seal."""
        sealed = unseal(line)
        record: Any = None
        if sealed is not None:
            try:
                record = orjson.loads(sealed[0])
            except orjson.JSONDecodeError:
                record = None
        if not isinstance(record, dict) or sealed is None:
            self.before = None
            return None, "not a sealed audit record"
        body, self._mac = sealed
        if self.seal.mac(body) == self._mac:
            return record, ""
        hint = "" if self.seal.key is not None else " (a keyed trail needs --key-file)"
        return record, f"the seal does not match: edited, forged, or sealed with another key{hint}"

    def _anchor(self, where: str, anchor: Any) -> Iterator[str]:
        try:
            chain, seq, prev, after = anchor["chain"], anchor["seq"], anchor["prev"], anchor["after"]
        except (KeyError, TypeError):
            yield f"{where}: not an anchor line"
            return
        if self.before != START and after != self.before:
            yield f"{where}: the anchor does not follow the line before it (the end of the previous file was removed)"
        self.pending = (chain, seq, prev)
        self.before = self._mac

    def _record(self, where: str, record: dict[str, Any], said: bool = False) -> Iterator[str]:
        try:
            chain, seq, prev = record["chain"], record["seq"], record["prev"]
        except KeyError:
            yield f"{where}: not an audit record"
            return
        pending, self.pending = self.pending, None
        if pending is not None:
            if (chain, seq, prev) != pending:
                yield f"{where}: chain {chain} seq {seq} is not the record the anchor before it names (removed)"
        elif chain in self.chains:
            last_mac, last_seq = self.chains[chain]
            if seq <= last_seq:
                yield f"{where}: chain {chain} seq {seq} comes after seq {last_seq} (a record repeated or moved)"
            elif seq != last_seq + 1:
                yield f"{where}: chain {chain} jumps from seq {last_seq} to {seq} (records removed)"
            elif prev != last_mac:
                yield f"{where}: chain {chain} seq {seq} does not follow the record before it (edited or removed)"
        elif not said and (not self.stream or (seq == 1 and prev != GENESIS)):
            yield f"{where}: chain {chain} begins at seq {seq} with no anchor line before it"
        self.chains[chain] = (self._mac, seq)
        self.before = self._mac


def verify(files: Iterable[tuple[str, Iterable[bytes]]], seal: Seal, stream: bool = False) -> Iterator[str]:
    """Every break in the given files (name and lines, oldest first): an edited, forged, removed or reordered line."""
    verifier = Verifier(seal, stream)
    for name, lines in files:
        yield from verifier.file(name, lines)
