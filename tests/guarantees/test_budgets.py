"""The budget guarantee, attacked as an ordinary authenticated client would attack it (issue 11).

A request is admitted only while what it may cost fits what is left, so a tenant's spend exceeds its budget by
at most the reservations of requests already admitted. Each test performs one way past a budget through a real
gateway, with the official openai client, in front of an upstream on loopback, and checks from the upstream's side
what went out and from the spend report what was counted.

Upstreams here cost $1 per million prompt tokens and $2 per million completion tokens (tests.conftest.upstream_spec).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest

from gateway.accounting.usage import UNKNOWN_WINDOW
from gateway.asgi import Receive, Scope, Send, send_bytes
from gateway.serving.app import Gateway, Settings
from gateway.tools.standin import StandIn
from tests.conftest import KEY, OTHER_KEY, Loop, key_hash, upstream_spec, wait_for, write_policy
from tests.faults import FaultServer, Json, chunk
from tests.upstreams.fake_providers import FakeAnthropic

pytest_plugins = ["tests.redis_server"]
# litellm silences these pydantic warnings process-wide at import; pytest's "error" filter would revive them
pytestmark = pytest.mark.filterwarnings("ignore:.*`ReadOnly` qualifier:UserWarning")

ADMIN_KEY = "sy-admin-test-key-0123456789abcdef"
HELLO = [{"role": "user", "content": "Hello there"}]  # estimated 11 // 4 + 4 = 6 prompt tokens
IN, OUT = 1.0 / 1e6, 2.0 / 1e6
DEFAULT_MAX_TOKENS = 77
NANO = 1_000_000_000


@pytest.fixture(params=["memory", "redis"])
def settings(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Gateway settings for either state backend (Redis: the session's private server, emptied)."""
    if request.param == "memory":
        return {"admin_key": ADMIN_KEY}
    return {"admin_key": ADMIN_KEY, "redis_url": request.getfixturevalue("redis_url")}


@pytest.fixture
def faults(loop: Loop) -> Iterator[list[FaultServer]]:
    """Fault servers started on the test's loop, each stopped (its sockets closed) before the loop closes."""
    made: list[FaultServer] = []
    yield made
    for server in made:
        loop.run(server.stop())


@dataclass
class Rig:
    """A gateway in front of one upstream, route 'chat', tenant acme (KEY) with the given budget."""

    loop: Loop
    url: str

    def client(self, key: str = KEY) -> openai.OpenAI:
        return self.loop.client(self.url + "/v1", key)

    def spend(self, tenant: str = "acme") -> dict[str, Any]:
        """The day's spend report once nothing is reserved any more (Redis settles in batches)."""
        found: dict[str, Any] = {}

        def settled() -> bool:
            response = httpx.get(f"{self.url}/admin/spend", params={"tenant": tenant, "window": "day"},
                                 headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=5)
            assert response.status_code == 200, response.text
            found.update(response.json()["tenants"][0])
            return bool(found["reserved_usd"] == 0 and found["upstreams"])

        wait_for(settled, what="the spend to settle")
        return found

    def metric(self, name: str, **labels: str) -> float:
        wanted = name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
        for line in httpx.get(f"{self.url}/metrics", timeout=5).text.splitlines():
            if line.startswith(wanted + " "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0


def start(loop: Loop, tmp_path: Path, upstream: Any, settings: dict[str, Any] | None = None,
          budget: float | None = 0.01, spec: dict[str, Any] | None = None, **route: Any) -> Rig:
    """A gateway in front of upstream (an ASGI app, or a fault server to start on the loop)."""
    if isinstance(upstream, FaultServer):
        loop.run(upstream.start())
        url = upstream.url
    else:
        url = loop.serve(upstream).url
    specs = {"up": spec(url) if callable(spec) else upstream_spec(url, **(spec or {}))}
    acme: dict[str, Any] = {"keys": [key_hash(KEY)]}
    if budget is not None:
        acme["budget"] = {"usd_per_day": budget}
    path = write_policy(tmp_path, specs, {"chat": {"candidates": ["up"], "default_max_tokens": DEFAULT_MAX_TOKENS,
                                                   **route}},
                        tenants={"acme": acme, "other": {"keys": [key_hash(OTHER_KEY)]}})
    gateway = Gateway(Settings(policy=str(path), reload_interval_s=0, **(settings or {})))
    return Rig(loop, loop.serve(gateway).url)


def refused(call: Any) -> openai.APIStatusError:
    with pytest.raises(openai.APIStatusError) as caught:
        call()
    return caught.value


# --- n: every choice is reserved ----------------------------------------------------------------------------------


def test_n_100_with_max_tokens_1000_is_refused_on_a_one_cent_budget(loop: Loop, tmp_path: Path,
                                                                     faults: list[FaultServer],
                                                                     settings: dict[str, Any]) -> None:
    upstream = FaultServer("up", default=Json(prompt_tokens=6, completion_tokens=100_000))
    faults.append(upstream)
    rig = start(loop, tmp_path, upstream, settings)
    error = refused(lambda: rig.client().chat.completions.create(model="chat", messages=HELLO, n=100,
                                                                 max_tokens=1000))
    assert (error.status_code, error.code) == (429, "insufficient_quota")
    assert isinstance(error.body, dict)
    may_cost = 6 * IN + 100 * 1000 * OUT
    assert f"this request may cost up to ${may_cost:.6f}; $0.010000 is left" in error.body["message"]
    assert upstream.count == 0


def test_n_choices_within_the_budget_are_admitted_and_the_spend_stays_within_it(loop: Loop, tmp_path: Path,
                                                                                faults: list[FaultServer],
                                                                                settings: dict[str, Any]) -> None:
    """Four choices of 1000 tokens reserve $0.008006 of $0.01; the upstream spends all of it; the next is refused."""
    upstream = FaultServer("up", default=Json(prompt_tokens=6, completion_tokens=4 * 1000))
    faults.append(upstream)
    rig = start(loop, tmp_path, upstream, settings)
    ask = lambda: rig.client().chat.completions.create(model="chat", messages=HELLO, n=4, max_tokens=1000)  # noqa: E731
    ask()
    assert upstream.arrivals[0].body["n"] == 4
    spent = rig.spend()["spend_usd"]
    assert spent == pytest.approx(6 * IN + 4000 * OUT, abs=1e-12)
    error = refused(ask)
    assert (error.status_code, error.code) == (429, "insufficient_quota")
    assert upstream.count == 1
    assert spent <= 0.01


@pytest.mark.parametrize(("endpoint", "field", "value"), [
    ("chat", "n", 0), ("chat", "n", 129), ("chat", "n", "2"), ("chat", "n", True), ("chat", "n", 1.5),
    ("completions", "best_of", 200),
])
def test_a_choice_count_that_is_no_positive_integer_up_to_128_is_refused(loop: Loop, tmp_path: Path,
                                                                         endpoint: str, field: str,
                                                                         value: Any) -> None:
    upstream = StandIn("up")
    rig = start(loop, tmp_path, upstream)
    client = rig.client()
    if endpoint == "chat":
        error = refused(lambda: client.chat.completions.create(model="chat", messages=HELLO,
                                                               extra_body={field: value}))
    else:
        error = refused(lambda: client.completions.create(model="chat", prompt="Hello", extra_body={field: value}))
    assert (error.status_code, error.code) == (400, "invalid_request")
    assert isinstance(error.body, dict)
    assert error.body["param"] == field
    assert upstream.seen == []


def test_best_of_multiplies_the_reservation_of_a_completion(loop: Loop, tmp_path: Path) -> None:
    upstream = StandIn("up")
    rig = start(loop, tmp_path, upstream)
    error = refused(lambda: rig.client().completions.create(model="chat", prompt="Hello", max_tokens=1000,
                                                            best_of=10))
    assert (error.status_code, error.code) == (429, "insufficient_quota")
    assert upstream.seen == []


# --- only the endpoint's own caps count ---------------------------------------------------------------------------


def test_max_output_tokens_on_chat_does_not_shrink_the_reservation(loop: Loop, tmp_path: Path) -> None:
    """Chat upstreams read max_tokens, not the Responses API's max_output_tokens: the route's default is reserved."""
    upstream = StandIn("up")
    rig = start(loop, tmp_path, upstream, budget=0.005, default_max_tokens=5000)  # may cost $0.010012
    error = refused(lambda: rig.client().chat.completions.create(model="chat", messages=HELLO,
                                                                 extra_body={"max_output_tokens": 1}))
    assert (error.status_code, error.code) == (429, "insufficient_quota")
    assert upstream.seen == []


# --- the prompt estimate holds everything the upstream reads -----------------------------------------------------


BIG = "word " * 200_000  # 1 MB: about 250,000 prompt tokens, $0.25 at $1 per million


def test_a_megabyte_of_message_content_is_refused_on_a_one_cent_budget(loop: Loop, tmp_path: Path) -> None:
    upstream = StandIn("up")
    rig = start(loop, tmp_path, upstream)
    error = refused(lambda: rig.client().chat.completions.create(
        model="chat", messages=[{"role": "user", "content": BIG}], max_tokens=10))
    assert (error.status_code, error.code) == (429, "insufficient_quota")
    assert upstream.seen == []


def test_a_megabyte_of_tool_description_is_refused_on_a_one_cent_budget(loop: Loop, tmp_path: Path) -> None:
    upstream = StandIn("up")
    rig = start(loop, tmp_path, upstream)
    tools = [{"type": "function", "function": {"name": "lookup", "description": BIG,
                                               "parameters": {"type": "object", "properties": {}}}}]
    error = refused(lambda: rig.client().chat.completions.create(model="chat", messages=HELLO, tools=tools,
                                                                 max_tokens=10))
    assert (error.status_code, error.code) == (429, "insufficient_quota")
    assert upstream.seen == []


# --- no max tokens: the route's default goes upstream as the cap -------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(("endpoint", "field"), [("chat", "max_tokens"), ("completions", "max_tokens"),
                                                 ("responses", "max_output_tokens")])
def test_without_max_tokens_the_upstream_receives_the_routes_default(loop: Loop, tmp_path: Path, endpoint: str,
                                                                     field: str, stream: bool) -> None:
    upstream = StandIn("up")
    rig = start(loop, tmp_path, upstream, budget=1.0, spec={"capabilities": ["responses"]})
    client = rig.client()
    if endpoint == "chat":
        answer = client.chat.completions.create(model="chat", messages=HELLO, stream=stream)
    elif endpoint == "completions":
        answer = client.completions.create(model="chat", prompt="Hello", stream=stream)
    else:
        answer = client.responses.create(model="chat", input="Hello", stream=stream)
    if stream:
        assert list(answer)  # type: ignore[call-overload]
    assert upstream.seen[-1].body[field] == DEFAULT_MAX_TOKENS


def test_the_clients_own_cap_and_a_tenant_without_budget_are_left_alone(loop: Loop, tmp_path: Path) -> None:
    upstream = StandIn("up")
    rig = start(loop, tmp_path, upstream, budget=1.0)
    rig.client().chat.completions.create(model="chat", messages=HELLO, max_completion_tokens=5)
    assert upstream.seen[-1].body["max_completion_tokens"] == 5
    assert "max_tokens" not in upstream.seen[-1].body
    rig.client(OTHER_KEY).chat.completions.create(model="chat", messages=HELLO)  # no budget
    assert "max_tokens" not in upstream.seen[-1].body


def test_a_translated_upstream_receives_the_routes_default_not_litellms(loop: Loop, tmp_path: Path) -> None:
    """litellm sends Anthropic the model's whole output limit (128000) when it is given no max_tokens."""
    anthropic = FakeAnthropic("anthropic")

    def spec(url: str) -> dict[str, Any]:
        return {"kind": "anthropic", "model": "claude-sonnet-4-5", "base_url": url, "api_key": "test",
                "region": "us-east", "context_window": 200_000}

    rig = start(loop, tmp_path, anthropic, budget=1.0, spec=spec)  # type: ignore[arg-type]
    rig.client().chat.completions.create(model="chat", messages=HELLO)
    assert anthropic.seen[-1].body["max_tokens"] == DEFAULT_MAX_TOKENS


def test_embeddings_on_a_512_token_window_are_served_and_sent_no_cap(loop: Loop, tmp_path: Path) -> None:
    """BERT-class models: the route's default_max_tokens (512 here) is no part of an embedding's window."""
    upstream = StandIn("up")
    rig = start(loop, tmp_path, upstream, budget=1.0, spec={"context_window": 512}, default_max_tokens=512)
    answer = rig.client().embeddings.create(model="chat", input="hello")
    assert len(answer.data) == 1
    assert set(upstream.seen[-1].body) == {"model", "input", "encoding_format"}


# --- absurd usage: clamped, never overflowing a counter ---------------------------------------------------------


class Reporter:
    """An upstream whose answers report the usage its script gives, written as raw JSON text (JSON encoders refuse
    1e400 and counts past 64 bits; an upstream's own encoder may not)."""

    def __init__(self, *script: tuple[str, str], first: bool = False) -> None:
        self.script = list(script)
        self.first = first  # in a stream, the usage event before the content
        self.seen: list[dict[str, Any]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        raw = b""
        while True:
            message = await receive()
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        body = orjson.loads(raw)
        self.seen.append(body)
        prompt, completion = self.script.pop(0) if self.script else ("7", "3")
        counts = f'{{"prompt_tokens": {prompt}, "completion_tokens": {completion}}}'.encode()
        head = b'{"id": "c1", "created": 0, "model": "up-model", '
        if not body.get("stream"):
            choice = b'{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}'
            await send_bytes(send, 200, head + b'"object": "chat.completion", "choices": [' + choice +
                             b'], "usage": ' + counts + b"}", b"application/json")
            return
        usage_event = b"data: " + head + b'"object": "chat.completion.chunk", "choices": [], "usage": ' + counts + b"}"
        words = [chunk("up-model", role=True), chunk("up-model", "a "), chunk("up-model", finish="stop")]
        events = [usage_event + b"\n\n", *words] if self.first else [*words, usage_event + b"\n\n"]
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        await send({"type": "http.response.body", "body": b"".join(events) + b"data: [DONE]\n\n"})


HUGE = str(10**19)
LEAST = str(-(2**63) * 10)


def ask(rig: Rig, stream: bool) -> None:
    answer = rig.client().chat.completions.create(model="chat", messages=HELLO, max_tokens=10, stream=stream)
    if stream:
        assert list(answer)  # type: ignore[call-overload]


@pytest.mark.parametrize("stream", [False, True])
def test_an_upstream_reporting_1e19_tokens_is_clamped_to_its_window(loop: Loop, tmp_path: Path,
                                                                    settings: dict[str, Any], stream: bool) -> None:
    script = [(HUGE, HUGE), ("1e19", "1e400" if not stream else "1e19"), (LEAST, "-5")]
    upstream = Reporter(*script)
    rig = start(loop, tmp_path, upstream, settings, budget=1.0, spec={"context_window": 8192})
    for _ in script:  # 1e19 each way as integers, then as floats (and infinity), then less than nothing
        ask(rig, stream)
    report = rig.spend()
    assert report["spend_usd"] == pytest.approx(2 * (8192 * IN + 8192 * OUT), abs=1e-12)
    assert report["upstreams"]["up"]["tokens"] == 4 * 8192
    assert rig.metric("switchyard_usage_clamped_total", upstream="up") == 2
    ask(rig, stream)  # and counting goes on
    wait_for(lambda: rig.spend()["upstreams"]["up"]["requests"] == 4, what="the fourth request's spend")
    assert rig.spend()["spend_usd"] == pytest.approx(2 * (8192 * IN + 8192 * OUT) + 7 * IN + 3 * OUT, abs=1e-12)


def test_1e19_tokens_on_an_upstream_of_unknown_window_spend_the_budget_not_unlimit_it(
        loop: Loop, tmp_path: Path, settings: dict[str, Any]) -> None:
    """On Redis this overflowed the spend counter to -$9.2e9, leaving the tenant an unlimited budget."""
    upstream = Reporter((HUGE, HUGE))
    rig = start(loop, tmp_path, upstream, settings, budget=1.0)
    ask(rig, False)
    report = rig.spend()
    assert report["spend_usd"] == pytest.approx(UNKNOWN_WINDOW * (IN + OUT))  # $30: spent, never negative
    assert report["remaining_usd"] < 0
    error = refused(lambda: ask(rig, False))
    assert (error.status_code, error.code) == (429, "insufficient_quota")
    assert isinstance(error.body, dict)
    assert "is spent" in error.body["message"]
    assert len(upstream.seen) == 1


def test_a_usage_event_before_the_content_is_clamped_too(loop: Loop, tmp_path: Path,
                                                          settings: dict[str, Any]) -> None:
    upstream = Reporter((HUGE, HUGE), first=True)
    rig = start(loop, tmp_path, upstream, settings, budget=1.0, spec={"context_window": 1000})
    ask(rig, True)
    assert rig.spend()["spend_usd"] == pytest.approx(1000 * IN + 1000 * OUT, abs=1e-12)


# --- every cap the upstream may read is reserved ------------------------------------------------------------------


@pytest.mark.parametrize("caps", [{"max_completion_tokens": 1, "max_tokens": 100_000},
                                  {"max_tokens": 100_000, "max_completion_tokens": 1}])
def test_a_small_max_completion_tokens_beside_a_large_max_tokens_reserves_the_large_one(
        loop: Loop, tmp_path: Path, settings: dict[str, Any], caps: dict[str, int]) -> None:
    """Upstreams differ in which of the two they obey (litellm's translations take the last one given): the
    reservation must cover the larger, or 100,000 tokens ($0.20) are spent on a one-cent budget."""
    upstream = Reporter(("6", "100000"))
    rig = start(loop, tmp_path, upstream, settings)
    error = refused(lambda: rig.client().chat.completions.create(model="chat", messages=HELLO, extra_body=caps))
    assert (error.status_code, error.code) == (429, "insufficient_quota")
    assert upstream.seen == []


@pytest.mark.parametrize("value", [0, -1, 1.5, "10", True, 10**30])
def test_an_odd_max_tokens_is_refused_with_a_4xx_and_nothing_reserved(loop: Loop, tmp_path: Path,
                                                                      value: Any) -> None:
    upstream = Reporter()
    rig = start(loop, tmp_path, upstream, {"admin_key": ADMIN_KEY})
    error = refused(lambda: rig.client().chat.completions.create(model="chat", messages=HELLO,
                                                                 extra_body={"max_tokens": value}))
    assert error.status_code in (400, 429)
    assert upstream.seen == []
    rig.client().chat.completions.create(model="chat", messages=HELLO, max_tokens=10)
    assert rig.spend()["reserved_usd"] == 0


def test_twenty_requests_racing_a_small_budget_spend_within_it(loop: Loop, tmp_path: Path,
                                                              settings: dict[str, Any]) -> None:
    """Each reserves 6 + 1000 tokens ($0.002006) and spends all of it: whatever the interleaving, at most four of
    the twenty fit a one-cent budget, since a request is admitted only once its reservation is held."""
    upstream = Reporter(*[("6", "1000")] * 20)
    rig = start(loop, tmp_path, upstream, settings)
    start_line, outcomes = threading.Barrier(20), list[int]()

    def one() -> None:
        client = rig.client()
        start_line.wait()
        try:
            client.chat.completions.create(model="chat", messages=HELLO, max_tokens=1000)
            outcomes.append(200)
        except openai.APIStatusError as exc:
            outcomes.append(exc.status_code)

    threads = [threading.Thread(target=one) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(set(outcomes)) in ([200, 429], [200])
    assert outcomes.count(200) == len(upstream.seen) <= 4
    assert rig.spend()["spend_usd"] <= 0.01
