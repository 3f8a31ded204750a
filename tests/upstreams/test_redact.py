"""Redaction of an upstream's key: every cheaply searchable form, a prefix included; nothing rewritten without a hit."""

from __future__ import annotations

import base64

import orjson
import pytest

from gateway.tools.standin.hostile import ECHOES
from gateway.upstreams.redact import REDACTED, Redactor
from tests.leaks import leaks

KEY = "sk-prov-0123456789abcdefABCDEF-xyz_0987654321"


@pytest.mark.parametrize("form", list(ECHOES))
def test_every_echoed_form_is_cut_out(form: str) -> None:
    text = ECHOES[form](KEY)
    body = b'{"message": "you sent ' + text.encode() + b' to us"}'
    out = Redactor(KEY)(body)
    assert leaks(out, KEY) == []
    assert REDACTED in out
    assert orjson.loads(out)["message"].startswith("you sent ")  # still the same JSON, if written again


@pytest.mark.parametrize("offset", [0, 1, 2, 5])
def test_base64_at_any_offset_is_found(offset: int) -> None:
    encoded = base64.b64encode(b"x" * offset + KEY.encode())
    assert leaks(Redactor(KEY)(encoded), KEY) == []


def test_a_body_without_the_key_is_returned_as_the_same_object() -> None:
    body = orjson.dumps({"choices": [{"message": {"content": "caf\u00e9 sk-other-key 12345"}}]})
    assert Redactor(KEY)(body) is body
    escaped = b'{"content": "caf\\u00e9 and more"}'
    assert Redactor(KEY)(escaped) is escaped


def test_partly_escaped_json_is_found_and_stays_valid_json() -> None:
    body = b'{"m": "' + KEY[:7].encode() + b"\\u002d" + KEY[8:].encode() + b'"}'
    out = Redactor(KEY)(body)
    assert leaks(out, KEY) == []
    assert orjson.loads(out) == {"m": "[redacted]"}


def test_escapes_in_text_are_undone_too() -> None:
    body = b"<p>bad key " + "".join(f"\\u{ord(c):04x}" for c in KEY).encode() + b"</p>"
    out = Redactor(KEY)(body)
    assert out == b"<p>bad key [redacted]</p>"


def test_a_body_full_of_escapes_costs_one_json_round_trip() -> None:
    body = orjson.dumps({"content": "\u00e9" * 200_000}).replace("é".encode(), b"\\u00e9")
    assert body.count(b"\\u00e9") == 200_000
    assert Redactor(KEY)(body) is body


def test_no_key_means_no_redaction() -> None:
    body = b"anything " + KEY.encode()
    assert Redactor(None)(body) is body


def test_the_whole_run_of_the_key_is_cut_not_just_its_start() -> None:
    out = Redactor(KEY)(b"a " + KEY.encode() + b" b")
    assert out == b"a [redacted] b"
