"""GET /admin/spend and `switchyard spend`: spend, budget left and savings, behind an admin key."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.tools.cli import main
from tests.conftest import KEY, OTHER_KEY, Loop, Stack, key_hash, start_stack, wait_for

pytest_plugins = ["tests.redis_server"]

ADMIN_KEY = "sy-admin-settings-key-0123456789abcdef"
POLICY_ADMIN_KEY = "sy-admin-policy-key-0123456789abcdef0"
HELLO = [{"role": "user", "content": "x" * 24}]
COST = 10 * 1.0 / 1e6 + 9 * 2.0 / 1e6  # the stand-in's 10 + 9 tokens at $1 / $2 per Mtok


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def admin_stack(loop: Loop, tmp_path: Path, **settings: Any) -> Stack:
    """acme with a budget of $1 a day and $20 a month; limited with none; two admin keys."""
    tenants = {"acme": {"keys": [key_hash(KEY)], "budget": {"usd_per_day": 1.0, "usd_per_month": 20.0}},
               "limited": {"keys": [key_hash(OTHER_KEY)]}}
    return start_stack(loop, tmp_path, names=("primary",), settings={"admin_key": ADMIN_KEY, **settings},
                       tenants=tenants, admin={"keys": [key_hash(POLICY_ADMIN_KEY)]})


def get_spend(stack: Stack, key: str | None = ADMIN_KEY, **params: str) -> httpx.Response:
    headers = {} if key is None else {"authorization": f"Bearer {key}"}
    return httpx.get(f"{stack.served.url}/admin/spend", params=params, headers=headers, timeout=5)


def serve_requests(stack: Stack, count: int, key: str = KEY) -> None:
    client = stack.client(key)
    for _ in range(count):
        client.chat.completions.create(model="chat", messages=HELLO, max_tokens=9)


def settled(stack: Stack, tenant: str, requests: int, timeout: float = 5) -> dict[str, Any]:
    """The tenant's row once its served requests are all counted (settlement follows the answer)."""
    row: dict[str, Any] = {}

    def counted() -> bool:
        row.update(get_spend(stack, tenant=tenant).json()["tenants"][0])
        return row["upstreams"].get("primary", {}).get("requests") == requests and row["reserved_usd"] == 0

    wait_for(counted, timeout=timeout, what=f"{requests} requests of {tenant} in the spend")
    return row


@pytest.mark.parametrize("key", [ADMIN_KEY, POLICY_ADMIN_KEY], ids=["settings-key", "policy-hashed-key"])
def test_an_admin_key_reads_spend_budget_left_and_upstreams(loop: Loop, tmp_path: Path, key: str) -> None:
    stack = admin_stack(loop, tmp_path)
    serve_requests(stack, 3)
    settled(stack, "acme", 3)
    response = get_spend(stack, key, tenant="acme")
    assert response.status_code == 200
    report = response.json()
    assert report["window"] == "day"
    [row] = report["tenants"]
    today = time.strftime("%Y-%m-%d", time.gmtime())
    assert (row["tenant"], row["period"], row["budget_usd"], row["reserved_usd"]) == ("acme", today, 1.0, 0)
    assert abs(row["spend_usd"] - 3 * COST) < 1e-9
    assert abs(row["remaining_usd"] - (1.0 - 3 * COST)) < 1e-9
    assert row["upstreams"] == {"primary": {"cost_usd": pytest.approx(3 * COST, abs=1e-12), "tokens": 57,
                                            "requests": 3}}
    midnight = (int(time.time()) // 86400 + 1) * 86400
    assert row["resets_at"] == midnight


def test_the_month_window_and_every_tenant(loop: Loop, tmp_path: Path) -> None:
    stack = admin_stack(loop, tmp_path)
    serve_requests(stack, 2)
    settled(stack, "acme", 2)
    report = get_spend(stack, window="month").json()
    assert report["window"] == "month"
    rows = {row["tenant"]: row for row in report["tenants"]}
    assert set(rows) == {"acme", "limited"}
    assert rows["acme"]["period"] == time.strftime("%Y-%m", time.gmtime())
    assert (rows["acme"]["budget_usd"], abs(rows["acme"]["spend_usd"] - 2 * COST) < 1e-9) == (20.0, True)
    assert (rows["limited"]["budget_usd"], rows["limited"]["remaining_usd"], rows["limited"]["spend_usd"]) == (
        None, None, 0)


@pytest.mark.parametrize(("key", "params", "status", "code"), [
    (KEY, {}, 403, "permission_denied"),
    (OTHER_KEY, {"tenant": "limited"}, 403, "permission_denied"),
    (None, {}, 401, "invalid_api_key"),
    ("sy-not-a-key-of-anyone", {}, 401, "invalid_api_key"),
    (ADMIN_KEY, {"window": "week"}, 400, "invalid_request"),
    (ADMIN_KEY, {"tenant": "nobody"}, 404, "not_found"),
], ids=["tenant-key", "own-tenant-key", "no-key", "unknown-key", "bad-window", "unknown-tenant"])
def test_what_the_admin_endpoint_refuses(loop: Loop, tmp_path: Path, key: str | None, params: dict[str, str],
                                         status: int, code: str) -> None:
    stack = admin_stack(loop, tmp_path)
    response = get_spend(stack, key, **params)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert "spend_usd" not in response.text


def test_without_an_admin_key_configured_nothing_opens_it(loop: Loop, tmp_path: Path) -> None:
    stack = start_stack(loop, tmp_path, names=("primary",))
    for key in ("", "None", "null"):
        assert get_spend(stack, key or None).status_code == 401
    assert get_spend(stack, KEY).status_code == 403


def test_spend_when_redis_is_away_is_503_promptly(loop: Loop, tmp_path: Path) -> None:
    stack = admin_stack(loop, tmp_path, redis_url=f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    started = time.perf_counter()
    response = get_spend(stack, tenant="acme")
    assert time.perf_counter() - started < 1.0
    assert (response.status_code, response.json()["error"]["code"]) == (503, "state_unavailable")


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_spend_of_a_tenant_without_limits_is_read_back(loop: Loop, tmp_path: Path, backend: str,
                                                       request: pytest.FixtureRequest) -> None:
    settings: dict[str, Any] = {}
    if backend == "redis":
        settings["redis_url"] = request.getfixturevalue("redis_url")
    stack = admin_stack(loop, tmp_path, **settings)
    serve_requests(stack, 2, key=OTHER_KEY)
    row = settled(stack, "limited", 2, timeout=2)  # Redis settles within ~10 ms
    assert abs(row["spend_usd"] - 2 * COST) < 1e-9


def test_switchyard_spend_prints_the_table(loop: Loop, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    stack = admin_stack(loop, tmp_path)
    serve_requests(stack, 3)
    settled(stack, "acme", 3)
    monkeypatch.setenv("SWITCHYARD_ADMIN_KEY", ADMIN_KEY)
    assert main(["spend", "--url", stack.served.url, "--tenant", "acme"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["tenant", "period", "spend", "$", "budget", "$", "left", "$", "savings", "$"]
    assert lines[1].split() == ["acme", time.strftime("%Y-%m-%d", time.gmtime()), f"{3 * COST:.6f}", "1.00",
                                f"{1 - 3 * COST:.6f}", "0.000000"]
    assert lines[2].split() == ["primary", "3", "requests", "57", "tokens", f"${3 * COST:.6f}"]
    assert len(lines) == 3


def test_switchyard_spend_lists_every_tenant_and_prints_json(loop: Loop, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    stack = admin_stack(loop, tmp_path)
    monkeypatch.setenv("SWITCHYARD_ADMIN_KEY", POLICY_ADMIN_KEY)
    assert main(["spend", "--url", stack.served.url, "--window", "month"]) == 0
    out = capsys.readouterr().out
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["acme", "limited"]
    assert main(["spend", "--url", stack.served.url, "--json"]) == 0
    assert [row["tenant"] for row in json.loads(capsys.readouterr().out)["tenants"]] == ["acme", "limited"]


@pytest.mark.parametrize(("key", "message"), [
    (None, "set SWITCHYARD_ADMIN_KEY to an admin key"),
    (KEY, "403: this is a tenant key; the admin endpoints need an admin key"),
])
def test_switchyard_spend_fails_without_an_admin_key(loop: Loop, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str], key: str | None,
                                                    message: str) -> None:
    stack = admin_stack(loop, tmp_path)
    if key is None:
        monkeypatch.delenv("SWITCHYARD_ADMIN_KEY", raising=False)
    else:
        monkeypatch.setenv("SWITCHYARD_ADMIN_KEY", key)
    assert main(["spend", "--url", stack.served.url]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert message in captured.err


def test_switchyard_spend_reports_an_unreachable_gateway(monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SWITCHYARD_ADMIN_KEY", ADMIN_KEY)
    url = f"http://127.0.0.1:{free_port()}"
    assert main(["spend", "--url", url]) == 1
    assert capsys.readouterr().err.startswith(f"{url}: ")
