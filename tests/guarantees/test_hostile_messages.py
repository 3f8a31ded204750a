"""A Messages upstream's whole answer is passed on only when it is a message: HTML, another API's JSON, broken
JSON or a stream where a message belongs are the upstream's failure (the next candidate's turn, else a 502
`api_error`), never a 200 the anthropic SDK cannot read.

count_tokens forwarded to a hostile Anthropic upstream gets the gateway's estimate instead of anything that is not
a count: a redirect (never followed), an answer past its limits, one that is no count; and never its key, echoed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from gateway.inbound.messages.count import input_tokens
from gateway.serving.app import Gateway, Settings
from gateway.tools.standin import Behaviour, Echo, Flood, Json, Redirect, Sse, chat_events
from gateway.tools.standin.hostile import ECHOES, gzip_bomb
from tests.conftest import KEY, Loop, upstream_spec, write_policy
from tests.guarantees.rig import BASE, Faults, rig

CHAT_ANSWER = b'{"choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":1,"completion_tokens":1}}'
ANSWERS: dict[str, Behaviour] = {
    "HTML": Echo(lambda _: b"<html>oops</html>", content_type="text/html"),
    "a JSON array": Echo(lambda _: b"[1, 2]"),
    "broken JSON": Echo(lambda _: b"{not json"),
    "an error object with status 200": Echo(lambda _: b'{"type":"error","error":{"type":"api_error","message":"x"}}'),
    "a chat completion": Echo(lambda _: CHAT_ANSWER),
    "a stream": Echo(lambda _: b"event: message_start\ndata: {}\n\n", content_type="text/event-stream"),
    "a message without content": Echo(lambda _: b'{"type":"message","role":"assistant"}'),
}
HELLO = {"model": "chat", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def faults(loop: Loop) -> Iterator[Faults]:
    made = Faults(loop)
    yield made
    made.stop()


def post(url: str) -> httpx.Response:
    return httpx.post(url + "/v1/messages", headers={"x-api-key": KEY}, content=orjson.dumps(HELLO), timeout=30)


@pytest.mark.parametrize("name", ANSWERS)
def test_an_answer_that_is_not_a_message_is_a_502(loop: Loop, tmp_path: Path, faults: Faults, name: str) -> None:
    r = rig(loop, tmp_path, {"primary": faults("primary", default=ANSWERS[name])}, capabilities=("messages",))
    response = post(r.served.url)
    assert response.status_code == 502, response.content[:300]
    assert orjson.loads(response.content)["error"]["type"] == "api_error"


@pytest.mark.parametrize("name", ["HTML", "a chat completion"])
def test_an_answer_that_is_not_a_message_falls_back(loop: Loop, tmp_path: Path, faults: Faults, name: str) -> None:
    """The next candidate, an OpenAI-compatible server the request is translated for, answers instead."""
    primary, fallback = faults("primary", default=ANSWERS[name]), faults("fallback", default=Json(content="fine"))
    specs = {"primary": upstream_spec(primary.url, capabilities=["tools", "json", "vision", "messages"]),
             "fallback": upstream_spec(fallback.url)}
    path = write_policy(tmp_path, specs, {"chat": {"candidates": ["primary", "fallback"]}}, resilience=BASE)
    response = post(loop.serve(Gateway(Settings(policy=str(path)))).url)
    assert response.status_code == 200, response.content[:300]
    assert response.headers["x-switchyard-upstream"] == "fallback"
    assert orjson.loads(response.content)["content"][0]["text"] == "fine"
    assert primary.count == 1


OTHER_STREAMS: dict[str, Behaviour] = {
    "a chat completions stream": Sse(chat_events("m", ["not ", "a ", "message"]), done=True),
    "garbage events": Sse((b"data: {not json\n\n", b"data: also garbage\n\n"), done=False),
    "a message_stop first": Sse((b'event: message_stop\ndata: {"type":"message_stop"}\n\n',), done=False),
}


@pytest.mark.parametrize("name", OTHER_STREAMS)
def test_a_stream_that_does_not_open_with_message_start_falls_back(loop: Loop, tmp_path: Path, faults: Faults,
                                                                   name: str) -> None:
    """Nothing has reached the client yet, so the next candidate streams instead; the client sees only its events."""
    primary, fallback = faults("primary", default=OTHER_STREAMS[name]), faults("fallback", default=Sse(
        chat_events("m", ["from ", "the ", "fallback"])))
    specs = {"primary": upstream_spec(primary.url, capabilities=["tools", "json", "vision", "messages"]),
             "fallback": upstream_spec(fallback.url)}
    path = write_policy(tmp_path, specs, {"chat": {"candidates": ["primary", "fallback"]}}, resilience=BASE)
    url = loop.serve(Gateway(Settings(policy=str(path)))).url
    with httpx.stream("POST", url + "/v1/messages", headers={"x-api-key": KEY}, json={**HELLO, "stream": True},
                      timeout=30) as response:
        raw = response.read()
    assert response.headers["x-switchyard-upstream"] == "fallback"
    assert raw.startswith(b"event: message_start"), raw[:200]
    events = [orjson.loads(line[6:]) for line in raw.split(b"\n") if line.startswith(b"data: {")]
    assert "".join(e["delta"].get("text", "") for e in events if e["type"] == "content_block_delta") == (
        "from the fallback")
    assert primary.count == 1


PROVIDER_KEY = "sk-ant-api03-Count0Hostile0Key0Never0Shown0Xy7Q"
COUNT = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}
LIMITS = {"body_bytes": 1 << 16, "decompressed_bytes": 1 << 17, "error_body_bytes": 4096}


def counting(loop: Loop, tmp_path: Path, server: str) -> str:
    """A gateway whose route 'chat' is one Anthropic upstream at server, with small limits; its URL."""
    spec = {"kind": "anthropic", "base_url": server + "/v1", "model": "claude-model", "api_key": PROVIDER_KEY,
            "hosting": "third_party", "cost": {"input_per_mtok": 3.0, "output_per_mtok": 15.0}, "limits": LIMITS}
    path = write_policy(tmp_path, {"claude": spec}, {"chat": {"candidates": ["claude"]}}, resilience=BASE)
    return loop.serve(Gateway(Settings(policy=str(path)))).url


def count(url: str) -> httpx.Response:
    return httpx.post(url + "/v1/messages/count_tokens", headers={"x-api-key": KEY}, content=orjson.dumps(COUNT),
                      timeout=30)


BOMB = gzip_bomb(4)
NOT_COUNTS: dict[str, Behaviour] = {
    "an answer past body_bytes": Flood(1 << 20, head=b'{"input_tokens": 1, "pad": "'),
    "an answer past body_bytes, its length announced": Flood(1 << 20, head=b'{"input_tokens": 1, "pad": "',
                                                            chunked=False),
    "a gzip bomb": Flood(len(BOMB), head=BOMB, encoding="gzip"),
    "an error past error_body_bytes": Flood(1 << 20, status=500, head=b'{"type": "error", "pad": "'),
    "a key echoed in a 500": Echo(lambda _: b'{"type":"error","error":{"type":"api_error","message":"'
                                  + PROVIDER_KEY.encode() + b'"}}', status=500),
}


@pytest.mark.parametrize("name", NOT_COUNTS)
def test_a_count_that_is_not_one_within_limits_is_the_estimate(loop: Loop, tmp_path: Path, faults: Faults,
                                                               name: str) -> None:
    server = faults("claude", default=NOT_COUNTS[name])
    response = count(counting(loop, tmp_path, server.url))
    assert (response.status_code, response.json()) == (200, {"input_tokens": input_tokens(COUNT)})
    assert server.count == 1
    assert server.arrivals[0].path == "/v1/messages/count_tokens"


def test_a_redirect_is_never_followed(loop: Loop, tmp_path: Path, faults: Faults) -> None:
    elsewhere = faults("elsewhere")
    server = faults("claude", default=Redirect(307, elsewhere.url + "/v1/messages/count_tokens"))
    response = count(counting(loop, tmp_path, server.url))
    assert (response.status_code, response.json()) == (200, {"input_tokens": input_tokens(COUNT)})
    assert (server.count, elsewhere.count) == (1, 0)


@pytest.mark.parametrize("form", ECHOES)
@pytest.mark.parametrize("status", [200, 400])
def test_an_echoed_key_never_reaches_the_client(loop: Loop, tmp_path: Path, faults: Faults, form: str,
                                                status: int) -> None:
    """A count, or a refusal of the body (passed on), that carries the key in any form has it cut out."""
    echo = ECHOES[form](PROVIDER_KEY)
    answer = ({"input_tokens": 7, "note": f"counted for {echo}"} if status == 200 else
              {"type": "error", "error": {"type": "invalid_request_error", "message": f"bad key {echo}"}})
    server = faults("claude", default=Echo(lambda _: orjson.dumps(answer), status=status))
    response = count(counting(loop, tmp_path, server.url))
    assert server.arrivals[0].headers["x-api-key"] == PROVIDER_KEY
    assert response.status_code == status
    assert response.json().get("input_tokens", 7) == 7  # the upstream's count, not the estimate
    assert PROVIDER_KEY not in response.text
    assert echo not in response.text
    assert "Count0Hostile0Key" not in response.text
