"""The estimate of a cut stream's completion tokens from the text it relayed."""

from __future__ import annotations

import json

import orjson
import pytest

from gateway.accounting.meter import TEXT_KEYS, WINDOW_BYTES, TextMeter, read_texts

CHAT = TEXT_KEYS["/chat/completions"]


def chunk(delta: dict[str, object], spaced: bool = False) -> bytes:
    payload = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
               "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}]}
    data = json.dumps(payload).encode() if spaced else orjson.dumps(payload)  # json.dumps writes '": ' and ', '
    return b"data: " + data + b"\n\n"


@pytest.mark.parametrize("spaced", [False, True])
def test_each_text_counts_a_token_per_four_bytes_and_at_least_one(spaced: bool) -> None:
    events = b"".join(chunk(d, spaced) for d in [
        {"role": "assistant", "content": ""},  # no text: nothing
        {"content": "a"},  # 1 byte: one token
        {"content": "several tokens merged"},  # 21 bytes: 6
        {"reasoning_content": "thinking"},  # 8 bytes: 2
        {"reasoning": "more"},  # 1
        {"content": None, "tool_calls": [{"index": 0, "function": {"arguments": "{\"city\": \"Paris\"}"}}]},
    ])
    arguments = len(b'{\\"city\\": \\"Paris\\"}')  # as it stands in the event, escapes included
    assert read_texts(events, CHAT) == (1 + 6 + 2 + 1 + -(-arguments // 4), 1 + 21 + 8 + 4 + arguments)


def test_an_escaped_quote_or_backslash_does_not_end_a_text_early() -> None:
    events = chunk({"content": 'say "hi" \\'}) + chunk({"content": "x"})
    text = len(orjson.dumps('say "hi" \\')) - 2
    assert read_texts(events, CHAT) == (-(-text // 4) + 1, text + 1)


def test_a_long_stream_past_the_exact_window_is_estimated_closely() -> None:
    words = [f"token{i % 97:02d} " for i in range(6000)]
    events = [chunk({"content": w}) for w in words]
    assert sum(map(len, events)) > 10 * WINDOW_BYTES
    meter = TextMeter(CHAT)
    for event in events:
        meter.add(event)
    exact = sum(-(-len(w) // 4) for w in words)
    assert meter.tokens == pytest.approx(exact, rel=0.02)
    assert meter.tokens >= len(words)  # never less than one per text


def test_completions_and_responses_count_their_own_text_fields() -> None:
    completion = b'data: {"id":"c","object":"text_completion","choices":[{"index":0,"text":"hello world"}]}\n\n'
    assert read_texts(completion, TEXT_KEYS["/completions"]) == (3, 11)
    delta = b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","delta":"hello"}\n\n'
    done = b'event: response.output_text.done\ndata: {"type":"response.output_text.done","text":"hello"}\n\n'
    assert read_texts(delta + done, TEXT_KEYS["/responses"]) == (2, 5)  # the closing event's whole text is no delta
