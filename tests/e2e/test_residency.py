"""Residency end to end: personal data of an EU tenant reaches only the EU self-hosted upstream, even when down."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import openai
import pytest

from gateway.serving.app import Gateway, Settings
from gateway.tools.standin import Fault, StandIn
from tests.conftest import KEY, OTHER_KEY, Loop, Stack, key_hash, upstream_spec, write_policy

PERSONAL = [{"role": "user", "content": "Please email the contract to jane.doe@example.com today."}]
PLAIN = [{"role": "user", "content": "Summarise the meeting notes."}]
CLASSES = {"public": {}, "internal": {"regions": ["eu-west", "eu-central"]},
           "personal": {"hosting": ["self"], "regions": ["eu-west"]}}
DETECT = {"detectors": [{"detect": ["email", "phone", "credit_card", "iban", "national_id"], "class": "personal"}]}


def regional(loop: Loop, tmp_path: Path, eu_self_url: str | None = None) -> Stack:
    """eu-self (self, eu-west), eu-cloud (third party, eu-central), us-cloud (third party, us); the EU tenant
    is floored at internal and limited to the EU."""
    apps = {name: StandIn(name) for name in ("eu-self", "eu-cloud", "us-cloud")}
    urls = {name: loop.serve(app).url for name, app in apps.items()}
    if eu_self_url is not None:
        urls["eu-self"] = eu_self_url
    upstreams = {
        "eu-self": upstream_spec(urls["eu-self"], model="qwen", region="eu-west", hosting="self"),
        "eu-cloud": upstream_spec(urls["eu-cloud"], model="mistral", region="eu-central", hosting="third_party"),
        "us-cloud": upstream_spec(urls["us-cloud"], model="gpt", region="us", hosting="third_party"),
    }
    tenants = {"acme-eu": {"keys": [key_hash(KEY)], "data_class": "internal", "regions": ["eu-west", "eu-central"]},
               "globex": {"keys": [key_hash(OTHER_KEY)]}}
    path = write_policy(tmp_path, upstreams, {"chat": {"candidates": ["us-cloud", "eu-cloud", "eu-self"]}},
                        data_classes=CLASSES, classify=DETECT, tenants=tenants)
    gateway = Gateway(Settings(policy=str(path)))
    return Stack(gateway, loop.serve(gateway), apps, loop)


def chat(stack: Stack, messages: list[dict[str, str]], key: str = KEY, stream: bool = False) -> httpx.Headers:
    client = stack.client(key)
    if stream:
        with client.chat.completions.with_streaming_response.create(model="chat", messages=messages,  # type: ignore
                                                                   stream=True) as response:
            list(response.parse())
            return response.headers
    return client.chat.completions.with_raw_response.create(model="chat", messages=messages).headers  # type: ignore


def counts(stack: Stack) -> dict[str, int]:
    return {name: len(app.seen) for name, app in stack.upstreams.items()}


@pytest.mark.parametrize("stream", [False, True])
def test_personal_data_goes_only_to_the_eu_self_hosted_upstream(loop: Loop, tmp_path: Path, stream: bool) -> None:
    stack = regional(loop, tmp_path)
    headers = chat(stack, PERSONAL, stream=stream)
    assert (headers["x-switchyard-upstream"], headers["x-switchyard-region"]) == ("eu-self", "eu-west")
    assert headers["x-switchyard-data-class"] == "personal"
    assert counts(stack) == {"eu-self": 1, "eu-cloud": 0, "us-cloud": 0}


def test_internal_data_of_the_eu_tenant_stays_in_the_eu(loop: Loop, tmp_path: Path) -> None:
    stack = regional(loop, tmp_path)
    headers = chat(stack, PLAIN)
    assert headers["x-switchyard-upstream"] == "eu-cloud"
    assert headers["x-switchyard-data-class"] == "internal"
    assert counts(stack)["us-cloud"] == 0


def test_another_tenant_without_limits_may_use_the_us(loop: Loop, tmp_path: Path) -> None:
    stack = regional(loop, tmp_path)
    assert chat(stack, PLAIN, key=OTHER_KEY)["x-switchyard-upstream"] == "us-cloud"


def test_the_caller_may_raise_the_class_by_header_but_never_lower_it(loop: Loop, tmp_path: Path) -> None:
    stack = regional(loop, tmp_path)
    client = stack.client(OTHER_KEY)
    raised = client.chat.completions.with_raw_response.create(
        model="chat", messages=PLAIN, extra_headers={"x-switchyard-data-class": "personal"})  # type: ignore
    assert raised.headers["x-switchyard-upstream"] == "eu-self"
    lowered = client.chat.completions.with_raw_response.create(
        model="chat", messages=PERSONAL, extra_headers={"x-switchyard-data-class": "public"})  # type: ignore
    assert lowered.headers["x-switchyard-data-class"] == "personal"
    assert lowered.headers["x-switchyard-upstream"] == "eu-self"


def test_when_the_eu_self_hosted_upstream_is_down_personal_data_fails_closed(loop: Loop, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    stack = regional(loop, tmp_path, eu_self_url=dead)
    with pytest.raises(openai.PermissionDeniedError) as caught:
        chat(stack, PERSONAL)
    error = caught.value.response.json()["error"]
    assert error["code"] == "residency_unavailable"
    assert "jane.doe" not in caught.value.response.text
    assert counts(stack) == {"eu-self": 0, "eu-cloud": 0, "us-cloud": 0}
    metrics = httpx.get(stack.served.url + "/metrics").text
    assert 'switchyard_residency_denied_total{data_class="personal",tenant="acme-eu"} 1.0' in metrics


def test_when_the_eu_self_hosted_upstream_errors_no_other_upstream_is_asked(loop: Loop, tmp_path: Path) -> None:
    stack = regional(loop, tmp_path)
    stack.upstreams["eu-self"].faults.extend([Fault(status=503), Fault(status=503)])
    with pytest.raises(openai.PermissionDeniedError) as caught:
        chat(stack, PERSONAL)
    assert caught.value.response.json()["error"]["code"] == "residency_unavailable"
    assert counts(stack) == {"eu-self": 2, "eu-cloud": 0, "us-cloud": 0}


def test_decisions_and_exclusions_are_counted(loop: Loop, tmp_path: Path) -> None:
    stack = regional(loop, tmp_path)
    chat(stack, PERSONAL)
    metrics = httpx.get(stack.served.url + "/metrics").text
    assert ('switchyard_decisions_total{data_class="personal",route="chat",rule="-",upstream="eu-self"} 1.0'
            in metrics)
    assert ('switchyard_candidates_excluded_total{reason="data_class",route="chat",upstream="us-cloud"} 1.0'
            in metrics)
