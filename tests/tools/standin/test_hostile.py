"""Hostile payloads: the gzip bomb inflates as promised, and each echo really holds the key's form."""

from __future__ import annotations

import gzip

import orjson
import pytest

from gateway.tools.standin.hostile import ECHOES, MIB, completion, error, escaped, gzip_bomb, spelled_stream, stream
from tests.leaks import leaks

KEY = "sk-proj-0123456789abcdefABCDEF0123456789"


def test_a_small_bomb_is_valid_gzip_of_that_many_zeros() -> None:
    bomb = gzip_bomb(3)
    assert len(bomb) < MIB // 100
    assert gzip.decompress(bomb) == bytes(3 * MIB)


def test_escaped_text_decodes_back() -> None:
    assert orjson.loads(f'"{escaped("sk-x")}"') == "sk-x"


@pytest.mark.parametrize("name", sorted(ECHOES))
def test_every_echo_form_reads_back_from_each_answer(name: str) -> None:
    text = ECHOES[name](KEY)
    raw = name == "u-escaped"  # the escapes go into the JSON as they are, so a client decodes the key itself
    expected = KEY if raw else text
    assert orjson.loads(completion(text, raw))["choices"][0]["message"]["content"] == expected
    assert orjson.loads(stream(text, raw).split(b"\n\n")[1][6:])["choices"][0]["delta"]["content"] == expected
    assert orjson.loads(error(text, raw))["error"]["message"].endswith(expected)


def test_the_leak_search_finds_the_key_and_nothing_in_an_innocent_answer() -> None:
    assert leaks(completion(KEY), KEY)
    assert leaks(completion("sk-"), KEY) == []


def test_a_spelled_stream_holds_the_key_only_in_pieces() -> None:
    spelled = spelled_stream(KEY, 4)
    assert KEY.encode() not in spelled
    contents = [orjson.loads(e[6:])["choices"][0]["delta"]["content"] for e in spelled.split(b"\n\n")[:-2]]
    assert "".join(contents) == f"your key is {KEY} - keep it safe"
