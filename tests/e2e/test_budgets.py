"""Budgets, rate limits and savings end to end: the official openai client against gateways in memory or on a
private Redis, three `switchyard serve --redis` processes sharing one, and Redis stopped mid-traffic.

Every stand-in answer reports 10 prompt and 9 completion tokens, so every cost is known exactly. PROMPT is
estimated at 10 prompt tokens and requests ask max_tokens=9, so a reservation is exactly the real cost.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import openai
import pytest
import yaml

from gateway.accounting import usage as accounting
from gateway.routing import classify
from gateway.routing.policy.decide import decide
from gateway.routing.policy.loader import load_policy
from gateway.tools.standin import StandIn
from tests.conftest import (
    KEY,
    OTHER_KEY,
    REDIS_TIMEOUT_S,
    Loop,
    Stack,
    key_hash,
    start_stack,
    upstream_spec,
    wait_for,
)

if TYPE_CHECKING:
    from tests.redis_server import RedisServer

pytest_plugins = ["tests.redis_server"]

ADMIN_KEY = "sy-admin-test-key-0123456789abcdef"
PROMPT = [{"role": "user", "content": "x" * 24}]  # estimated 24 // 4 + 4 = 10 tokens, as the stand-in reports
SHORT = [{"role": "user", "content": "Hello"}]  # estimated 5 // 4 + 4 = 5 tokens: under the real 10
MAX_TOKENS = 9  # the stand-in's answer is 9 tokens
NANO = 1_000_000_000
COST = 10 * 1.0 / 1e6 + 9 * 2.0 / 1e6  # USD at upstream_spec's prices: $1 in, $2 out per Mtok
COST_NANO = 28_000
PREMIUM = {"input_per_mtok": 10.0, "output_per_mtok": 20.0}
PREMIUM_COST = 10 * 10.0 / 1e6 + 9 * 20.0 / 1e6


def tenants(**acme: Any) -> dict[str, Any]:
    """The two tenants of conftest's policy, acme (KEY) with the given settings."""
    return {"acme": {"keys": [key_hash(KEY)], **acme}, "limited": {"keys": [key_hash(OTHER_KEY)]}}


@pytest.fixture(params=["memory", "redis"])
def settings(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Gateway settings for either state backend (Redis: the session's private server, emptied)."""
    if request.param == "memory":
        return {"admin_key": ADMIN_KEY}
    return {"admin_key": ADMIN_KEY, "redis_url": request.getfixturevalue("redis_url")}


def ask(stack: Stack, messages: list[dict[str, str]] = PROMPT, **options: Any) -> Any:
    return stack.client().chat.completions.with_raw_response.create(model="chat", messages=messages,
                                                                    **{"max_tokens": MAX_TOKENS, **options})


def refusal(stack: Stack) -> openai.APIStatusError:
    with pytest.raises(openai.APIStatusError) as refused:
        ask(stack)
    return refused.value


def spend_report(url: str, tenant: str = "acme", window: str = "day") -> dict[str, Any]:
    response = httpx.get(f"{url}/admin/spend", params={"tenant": tenant, "window": window},
                         headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=5)
    assert response.status_code == 200, response.text
    row: dict[str, Any] = response.json()["tenants"][0]
    return row


def settled_spend(url: str, expected_usd: float, tenant: str = "acme", window: str = "day",
                  timeout: float = 10) -> dict[str, Any]:
    """The spend read back once it is expected_usd and nothing is still reserved (Redis settles in batches)."""
    found: dict[str, Any] = {}

    def done() -> bool:
        found.update(spend_report(url, tenant, window))
        return abs(found["spend_usd"] - expected_usd) < 1e-9 and found["reserved_usd"] == 0

    try:
        wait_for(done, timeout=timeout, what=f"spend of {expected_usd}")
    except AssertionError:
        raise AssertionError(f"spend never settled at {expected_usd}: {found}") from None
    return found


def metric(stack: Stack, name: str, **labels: str) -> float:
    stack.loop.settled()
    return stack.gateway.metrics.registry.get_sample_value(name, labels) or 0.0


def seconds_until(moment: dt.datetime) -> float:
    return moment.timestamp() - time.time()


# --- one gateway, either backend -----------------------------------------------------------------------------------


@pytest.mark.parametrize("window", ["day", "month"])
def test_a_spent_budget_is_refused_naming_the_budget_and_when_it_resets(loop: Loop, tmp_path: Path,
                                                                         settings: dict[str, Any],
                                                                         window: str) -> None:
    stack = start_stack(loop, tmp_path, names=("primary",), settings=settings,
                        tenants=tenants(budget={f"usd_per_{window}": 3 * COST}))
    for _ in range(3):
        assert ask(stack).headers["x-switchyard-upstream"] == "primary"
    error = refusal(stack)
    today = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    resets = today + dt.timedelta(days=1) if window == "day" else (today.replace(day=1) + dt.timedelta(days=32)
                                                                     ).replace(day=1)
    assert (error.status_code, error.code) == (429, "insufficient_quota")
    assert isinstance(error.body, dict)
    assert error.body["type"] == "insufficient_quota"
    name = {"day": "daily", "month": "monthly"}[window]
    assert f"the {name} budget of tenant 'acme' is spent ($0.000000 left" in error.body["message"]
    assert f"resets at {resets:%Y-%m-%dT%H:%M:%SZ}" in error.body["message"]
    assert abs(int(error.response.headers["retry-after"]) - seconds_until(resets)) <= 2
    assert len(stack.upstreams["primary"].seen) == 3
    assert metric(stack, "switchyard_budget_exhausted_total", tenant="acme", action="reject") == 1
    assert metric(stack, "switchyard_budget_remaining_usd", tenant="acme", window=window) == pytest.approx(0)
    report = settled_spend(stack.served.url, 3 * COST, window=window)
    assert report["remaining_usd"] == pytest.approx(0, abs=1e-12)


def degrading_stack(loop: Loop, tmp_path: Path, settings: dict[str, Any]) -> Stack:
    """premium (dear) then selfhosted in the route; acme's budget covers two premium answers, then degrades."""
    return start_stack(loop, tmp_path, names=("premium", "selfhosted"), settings=settings,
                       upstream_premium={"cost": PREMIUM, "hosting": "third_party"},
                       tenants=tenants(budget={"usd_per_day": 2 * PREMIUM_COST,
                                               "when_exhausted": {"route_to": ["selfhosted"]}}))


def test_when_exhausted_route_to_degrades_to_the_listed_upstream(loop: Loop, tmp_path: Path,
                                                                 settings: dict[str, Any]) -> None:
    stack = degrading_stack(loop, tmp_path, settings)
    served = [ask(stack).headers["x-switchyard-upstream"] for _ in range(5)]
    assert served == ["premium", "premium", "selfhosted", "selfhosted", "selfhosted"]
    assert len(stack.upstreams["premium"].seen) == 2
    assert metric(stack, "switchyard_budget_exhausted_total", tenant="acme", action="route_to") == 3


def test_degraded_requests_are_all_in_the_spend_read_back(loop: Loop, tmp_path: Path, settings: dict[str, Any],
                                                          request: pytest.FixtureRequest) -> None:
    stack = degrading_stack(loop, tmp_path, settings)
    for _ in range(5):
        ask(stack)
    report = settled_spend(stack.served.url, 2 * PREMIUM_COST + 3 * COST, timeout=2)  # Redis flushes every 10 ms
    assert {name: row["requests"] for name, row in report["upstreams"].items()} == {"premium": 2, "selfhosted": 3}


@pytest.mark.parametrize(("limit", "kind", "words"), [
    ({"requests_per_minute": 3}, "requests_per_minute", "requests per minute"),
    ({"tokens_per_minute": 3 * 19}, "tokens_per_minute", "tokens per minute"),  # 10 prompt + 9 max_tokens each
])
def test_a_rate_limit_refuses_with_rate_limit_exceeded_and_retry_after(loop: Loop, tmp_path: Path,
                                                                       settings: dict[str, Any],
                                                                       limit: dict[str, int], kind: str,
                                                                       words: str) -> None:
    stack = start_stack(loop, tmp_path, names=("primary",), settings=settings, tenants=tenants(rate_limit=limit))
    for _ in range(3):
        ask(stack)
    error = refusal(stack)
    assert (error.status_code, error.code) == (429, "rate_limit_exceeded")
    assert isinstance(error.body, dict)
    assert error.body["type"] == kind.split("_")[0]  # OpenAI's types: requests, tokens
    assert f"tenant 'acme' is over its {words}" in error.body["message"]
    assert 55 <= int(error.response.headers["retry-after"]) <= 60
    assert len(stack.upstreams["primary"].seen) == 3
    assert metric(stack, "switchyard_rate_limited_total", tenant="acme", kind=kind) == 1
    other = stack.client(OTHER_KEY).chat.completions.create(model="chat", messages=PROMPT)  # per tenant
    assert other.choices[0].message.content


RESET = re.compile(r"^(?:\d+m)?\d+(?:\.\d+)?s$|^\d+ms$")  # OpenAI's durations: 1s, 6m0s, 59.734s, 20ms


def test_every_answer_of_a_rate_limited_tenant_carries_openais_rate_limit_headers(
        loop: Loop, tmp_path: Path, settings: dict[str, Any]) -> None:
    stack = start_stack(loop, tmp_path, names=("primary",), settings=settings,
                        tenants=tenants(rate_limit={"requests_per_minute": 2, "tokens_per_minute": 1000}))
    streamed = ask(stack, stream=True)
    assert list(streamed.parse())  # read to its end, so its connection goes back
    served = [ask(stack).headers, streamed.headers]  # plain and streamed alike
    for headers, left in zip(served, ("0", "1"), strict=True):
        assert headers["x-ratelimit-limit-requests"] == "2"
        assert headers["x-ratelimit-remaining-requests"] == left
        assert headers["x-ratelimit-reset-requests"] == "1m0s"  # the newest request leaves the minute then
        assert headers["x-ratelimit-limit-tokens"] == "1000"
        assert RESET.match(headers["x-ratelimit-reset-tokens"])
    assert int(served[1]["x-ratelimit-remaining-tokens"]) == 1000 - 19  # 10 estimated prompt + 9 max_tokens
    error = refusal(stack)
    assert (error.status_code, error.code) == (429, "rate_limit_exceeded")
    assert error.response.headers["x-ratelimit-remaining-requests"] == "0"
    assert RESET.match(error.response.headers["x-ratelimit-reset-requests"])
    unlimited = stack.client(OTHER_KEY).chat.completions.with_raw_response.create(model="chat", messages=PROMPT)
    assert "x-ratelimit-limit-requests" not in unlimited.headers  # a tenant with no rate limit


def test_a_budget_only_too_small_for_this_request_says_what_it_may_cost(loop: Loop, tmp_path: Path,
                                                                        settings: dict[str, Any]) -> None:
    stack = start_stack(loop, tmp_path, names=("primary",), settings=settings,
                        tenants=tenants(budget={"usd_per_day": 3 * COST}))
    with pytest.raises(openai.APIStatusError) as refused:
        ask(stack, max_tokens=100_000)  # may cost $0.20001
    assert (refused.value.status_code, refused.value.code) == (429, "insufficient_quota")
    assert isinstance(refused.value.body, dict)
    assert refused.value.body["message"].startswith(
        f"this request may cost up to $0.200010; ${3 * COST:.6f} is left of the daily budget of tenant 'acme'")
    assert ask(stack).headers["x-switchyard-upstream"] == "primary"  # a smaller request still fits


@pytest.mark.parametrize("where", ["route", "policy"])
def test_savings_against_the_baseline_are_recorded(loop: Loop, tmp_path: Path, settings: dict[str, Any],
                                                   where: str) -> None:
    route: dict[str, Any] = {"candidates": ["selfhosted"]}
    sections: dict[str, Any] = {}
    if where == "route":
        route["baseline"] = "premium"
    else:
        sections["baseline"] = "premium"
    stack = start_stack(loop, tmp_path, names=("premium", "selfhosted"), settings=settings, models={"chat": route},
                        upstream_premium={"cost": PREMIUM, "hosting": "third_party"},
                        tenants=tenants(budget={"usd_per_day": 1.0}), **sections)
    for _ in range(3):
        assert ask(stack).headers["x-switchyard-upstream"] == "selfhosted"
    saved = 3 * (PREMIUM_COST - COST)
    report = settled_spend(stack.served.url, 3 * COST)
    assert abs(report["savings_usd"] - saved) < 1e-9
    assert metric(stack, "switchyard_savings_usd_total", tenant="acme", route="chat") == pytest.approx(saved)
    assert stack.upstreams["premium"].seen == []


def test_streams_are_charged_like_whole_answers(loop: Loop, tmp_path: Path, settings: dict[str, Any]) -> None:
    stack = start_stack(loop, tmp_path, names=("primary",), settings=settings,
                        tenants=tenants(budget={"usd_per_day": 1.0}))
    for _ in range(2):
        chunks = list(stack.client().chat.completions.create(model="chat", messages=PROMPT, max_tokens=MAX_TOKENS,
                                                             stream=True))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).startswith("[primary]")
    report = settled_spend(stack.served.url, 2 * COST)
    assert report["upstreams"]["primary"] == {"cost_usd": pytest.approx(2 * COST, abs=1e-12), "tokens": 38,
                                              "requests": 2}


# --- three `switchyard serve --redis` processes on one private Redis ----------------------------------------------


CAPPED_KEY = "sk-sy-capped-0123456789abcdef0123456789ab"
PACED_KEY = "sk-sy-paced-0123456789abcdef0123456789abc"
BUDGET_REQUESTS = 10
RPM = 60


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


@dataclass
class Trio:
    """Three gateway processes on one Redis, one stand-in upstream behind them."""

    ports: list[int]
    upstream: StandIn
    policy: Path

    @property
    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}" for port in self.ports]

    def metric_sum(self, name: str, **labels: str) -> float:
        """A metric summed over the three processes' /metrics."""
        wanted = name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
        total = 0.0
        for url in self.urls:
            for line in httpx.get(f"{url}/metrics", timeout=5).text.splitlines():
                if line.startswith(wanted + " "):
                    total += float(line.rsplit(" ", 1)[1])
        return total


@pytest.fixture(scope="module")
def trio(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trio]:
    folder = tmp_path_factory.mktemp("trio")
    loop = Loop()
    upstream = StandIn("primary")
    doc = {
        "version": 1, "upstreams": {"primary": upstream_spec(loop.serve(upstream).url)},
        "models": {"chat": {"candidates": ["primary"]}},
        "tenants": {"capped": {"keys": [key_hash(CAPPED_KEY)], "budget": {"usd_per_day": BUDGET_REQUESTS * COST}},
                    "paced": {"keys": [key_hash(PACED_KEY)], "rate_limit": {"requests_per_minute": RPM}}},
    }
    policy = folder / "policy.yaml"
    policy.write_text(yaml.safe_dump(doc, sort_keys=False))
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "SWITCHYARD_ADMIN_KEY": ADMIN_KEY}
    ports = [free_port() for _ in range(3)]
    processes = []
    for i, port in enumerate(ports):
        with (folder / f"gateway{i}.log").open("wb") as log:
            processes.append(subprocess.Popen(
                [sys.executable, "-m", "gateway.tools.cli", "serve", "--policy", str(policy), "--port", str(port),
                 "--redis", redis_server.url(), "--redis-timeout-ms", str(REDIS_TIMEOUT_S * 1000),
                 "--reload-interval-s", "0", "--log-level", "warning"],
                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
    try:
        for process, port in zip(processes, ports, strict=True):
            wait_for(lambda p=process, n=port: ready(n) or p.poll() is not None, timeout=30,
                     what="switchyard serve --redis")
            assert process.poll() is None, (folder / f"gateway{ports.index(port)}.log").read_text()
        yield Trio(ports, upstream, policy)
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        loop.close()


@dataclass
class Outcome:
    code: str  # "served", or the error code
    status: int
    retry_after: str | None


async def burst(urls: list[str], key: str, count: int, messages: list[dict[str, str]]) -> list[Outcome]:
    """count concurrent chat requests spread over urls, each answer or refusal recorded."""
    clients = [openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=30) for url in urls]

    async def one(i: int) -> Outcome:
        try:
            await clients[i % len(clients)].chat.completions.create(model="chat", messages=messages,
                                                                    max_tokens=MAX_TOKENS)
        except openai.APIStatusError as exc:
            return Outcome(str(exc.code), exc.status_code, exc.response.headers.get("retry-after"))
        return Outcome("served", 200, None)

    try:
        async with asyncio.timeout(60):
            return list(await asyncio.gather(*(one(i) for i in range(count))))
    finally:
        for client in clients:
            await client.close()


def reservation_nano(policy: Path, tenant: str, messages: list[dict[str, str]]) -> int:
    """What the gateway reserves for one request: the dearest candidate's estimate (prompt + max_tokens)."""
    loaded = load_policy(policy)
    features = classify.features(loaded, tenant, "chat", {"model": "chat", "messages": messages,
                                                          "max_tokens": MAX_TOKENS}, {})
    return accounting.limits_for(loaded, features, decide(loaded, features).candidates).cost


@pytest.mark.parametrize(("messages", "most"), [(PROMPT, 10), (SHORT, 12)], ids=["exact-estimate", "underestimate"])
def test_a_budget_holds_across_three_processes_on_one_redis(trio: Trio, redis_url: str,
                                                             messages: list[dict[str, str]], most: int) -> None:
    """The bound: a request is admitted only while spent + reserved + its reservation r fits the budget B, and
    every earlier request holds r until it settles at its cost c; so at most B // min(r, c) are served. With
    PROMPT, r == c and that is exactly 10; with SHORT the prompt is underestimated (r = $23e-6 < c = $28e-6) and
    up to 12 may be, each overshooting by c - r."""
    trio.upstream.seen.clear()
    budget = round(BUDGET_REQUESTS * COST * NANO)
    reservation = reservation_nano(trio.policy, "capped", messages)
    bound = budget // min(reservation, COST_NANO)
    assert bound == most
    outcomes = asyncio.run(burst(trio.urls, CAPPED_KEY, 200, messages))
    served = [o for o in outcomes if o.code == "served"]
    refused = [o for o in outcomes if o.code != "served"]
    assert BUDGET_REQUESTS <= len(served) <= bound
    assert {(o.code, o.status) for o in refused} == {("insufficient_quota", 429)}
    assert all(o.retry_after and int(o.retry_after) >= 1 for o in refused)
    assert len(trio.upstream.seen) == len(served)
    expected = len(trio.upstream.seen) * COST  # what the upstream's log implies
    reports = [settled_spend(url, expected, tenant="capped") for url in trio.urls]  # every replica agrees
    for report in reports:
        assert round(report["spend_usd"] * NANO) == len(trio.upstream.seen) * COST_NANO
        assert report["upstreams"]["primary"]["requests"] == len(served)
    overshoot = trio.metric_sum("switchyard_budget_overshoot_usd_total", tenant="capped")
    assert overshoot == pytest.approx(len(served) * max(0, COST_NANO - reservation) / NANO, abs=1e-12)


def test_a_rate_limit_holds_across_three_processes_on_one_redis(trio: Trio, redis_url: str) -> None:
    trio.upstream.seen.clear()
    started = time.monotonic()
    outcomes = asyncio.run(burst(trio.urls, PACED_KEY, 100, PROMPT))
    assert time.monotonic() - started < 60  # all within the minute
    served = [o for o in outcomes if o.code == "served"]
    refused = [o for o in outcomes if o.code != "served"]
    assert len(served) == RPM
    assert {(o.code, o.status) for o in refused} == {("rate_limit_exceeded", 429)}
    assert all(o.retry_after and 1 <= int(o.retry_after) <= 60 for o in refused)
    assert len(trio.upstream.seen) == RPM
    settled_spend(trio.urls[0], RPM * COST, tenant="paced")
    assert trio.metric_sum("switchyard_rate_limited_total", tenant="paced", kind="requests_per_minute") == 100 - RPM


# --- Redis stopped mid-traffic, then started again ----------------------------------------------------------------


@dataclass
class Sent:
    started: float
    seconds: float
    code: str


class Traffic:
    """Threads sending requests back to back until stopped, each answer timed."""

    def __init__(self, stack: Stack, threads: int = 3) -> None:
        self.sent: list[Sent] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(stack.client(timeout=10),)) for _ in range(threads)]

    def _run(self, client: openai.OpenAI) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                client.chat.completions.create(model="chat", messages=PROMPT, max_tokens=MAX_TOKENS)
                code = "served"
            except openai.APIStatusError as exc:
                code = str(exc.code)
            except openai.APIError as exc:  # a timeout: a hung request
                code = type(exc).__name__
            self.sent.append(Sent(started, time.monotonic() - started, code))

    def count(self, since: float, code: str | None = None) -> Callable[[], int]:
        return lambda: sum(1 for s in list(self.sent) if s.started > since and (code is None or s.code == code))

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)


@pytest.mark.parametrize("on_unavailable", ["fail_closed", "local"])
def test_redis_stopped_mid_traffic_then_started_again(loop: Loop, tmp_path: Path, own_redis: RedisServer,
                                                     on_unavailable: str) -> None:
    stack = start_stack(loop, tmp_path, names=("primary",), settings={"redis_url": own_redis.url(),
                                                                      "admin_key": ADMIN_KEY},
                        tenants=tenants(budget={"usd_per_day": 1.0}), state={"on_unavailable": on_unavailable})
    with Traffic(stack) as traffic:
        wait_for(lambda: traffic.count(0, "served")() >= 10, what="traffic through Redis")
        own_redis.stop(save=True)  # its data is kept, as a production Redis keeps it
        gone = time.monotonic()
        wait_for(lambda: traffic.count(gone)() >= 20, what="traffic while Redis is away")
        restarted = time.monotonic()
        own_redis.start()
        wait_for(lambda: traffic.count(restarted, "served")() >= 10, what="traffic after Redis returned")
    assert all(s.seconds < 10 for s in traffic.sent)  # no request hung until its client gave up
    if on_unavailable == "fail_closed":
        assert {s.code for s in traffic.sent} == {"served", "state_unavailable"}
        during = [s for s in traffic.sent if gone < s.started and s.started + s.seconds < restarted]
        assert during
        assert {s.code for s in during} == {"state_unavailable"}
    else:
        assert {s.code for s in traffic.sent} == {"served"}
    served = sum(s.code == "served" for s in traffic.sent)
    assert len(stack.upstreams["primary"].seen) == served

    def local_spend() -> tuple[int, int]:
        spend = loop.run(stack.gateway.ledger.local.spend("acme", "day", time.time()))
        return spend.spent, spend.reserved

    local_spent, local_reserved = local_spend()
    assert local_reserved == 0
    if on_unavailable == "fail_closed":
        assert local_spent == 0
    assert local_spent % COST_NANO == 0
    shared = settled_spend(stack.served.url, served * COST - local_spent / NANO)  # no request counted twice
    assert shared["upstreams"]["primary"]["requests"] + local_spent // COST_NANO == served
    wait_for(lambda: stack.gateway.ledger.available(time.time()), what="the circuit around Redis to close")
    for _ in range(3):  # and Redis counts again
        ask(stack)
    settled_spend(stack.served.url, (served + 3) * COST - local_spent / NANO)
    assert metric(stack, "switchyard_state_errors_total", backend="redis", op="admit") >= 3
