"""The deployment files under deploy/ against the gateway they deploy.

- Every metric the Grafana dashboard and the Prometheus alerts query is one a live gateway exports after a
  mixed workload (successes, a stream, a cut stream, a retry and fallback, an open circuit, a 502, a residency
  denial, a budget rejection, a rate limit, Redis errors, audit write errors, a policy reload), with labels
  it has; where a `prometheus` binary is installed (scripts/check-deploy installs it), Prometheus scrapes that
  gateway and every dashboard query must return a number, and every alert rule must evaluate.
- The dashboard has a panel for each topic an operator looks for, laid out without overlaps.
- The Kubernetes manifests drain within the grace period, probe the right endpoints and run as non-root;
  the Dockerfile, compose file, Prometheus and Grafana files agree with each other and with the gateway.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from openai.types.chat import ChatCompletionMessageParam
from prometheus_client.parser import text_string_to_metric_families

from gateway.routing.policy.loader import load_policy
from gateway.tools.standin import Fault, QueueingEngine
from tests.conftest import KEY, OTHER_KEY, RESILIENCE, Loop, Stack, key_hash, start_stack, wait_for

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "switchyard.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yaml"
K8S = DEPLOY / "k8s"
THIRD_KEY = "sk-sy-third-key-0123456789abcdef0123456789"
METRIC = re.compile(r"\bswitchyard_[a-z_]+\b")
SELECTOR = re.compile(r"\b(switchyard_[a-z_]+)\s*\{([^}]*)\}")
MATCHER = re.compile(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)")
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
PLAIN: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Summarise the meeting notes."}]
PERSONAL: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "Please email the contract to jane.doe@example.com today."}]
OPEN_S = 0.3  # how long a circuit the workload opens stays open
# What a dashboard variable or Grafana macro stands for when the test evaluates a query itself.
MACROS = {"$__rate_interval": "1m", "$__range": "5m", "$route": ".*", "$tenant": ".*", "$self_hosted": "self-eu"}


# ------------------------------------------------------------------------------------------------ expressions

def _strings(node: Any, keys: frozenset[str]) -> Iterator[str]:
    """Every string value under one of keys, anywhere in a JSON document."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in keys and isinstance(value, str):
                yield value
            else:
                yield from _strings(value, keys)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item, keys)


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def dashboard_exprs() -> list[str]:
    """Panel and annotation queries, and the variables' label_values() definitions."""
    return list(_strings(dashboard(), frozenset({"expr", "query", "definition"})))


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def alert_exprs() -> list[str]:
    return [rule["expr"] for rule in alert_rules()]


def panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


# ------------------------------------------------------------------------------------------------ live gateway

@dataclass
class Live:
    """A gateway after a mixed workload: its samples by name with their label names, and Prometheus if any."""

    samples: dict[str, set[str]]
    prometheus: str | None


def _policy_sections(dead_redis: str, meter_url: str) -> dict[str, Any]:
    resilience = {**RESILIENCE, "attempts_per_upstream": 2, "circuit": {"failures": 2, "open_s": OPEN_S}}
    return {
        "upstream_self-eu": {"region": "eu-west", "hosting": "self",
                             "cost": {"input_per_mtok": 0.1, "output_per_mtok": 0.2},
                             "capacity": {"engine": "vllm", "metrics_url": meter_url + "/metrics", "max_waiting": 100,
                                          "poll_ms": 50, "stale_ms": 5000}},
        "upstream_cloud-us": {"region": "us", "hosting": "third_party",
                              "cost": {"input_per_mtok": 5.0, "output_per_mtok": 15.0}},
        "tenants": {
            "acme": {"keys": [key_hash(KEY)], "budget": {"usd_per_day": 100},
                     "rate_limit": {"requests_per_minute": 10000}},
            "tight": {"keys": [key_hash(OTHER_KEY)], "budget": {"usd_per_day": 0.0000001}},
            "slow": {"keys": [key_hash(THIRD_KEY)], "rate_limit": {"requests_per_minute": 1}},
        },
        "baseline": "cloud-us",
        "data_classes": {"public": {}, "personal": {"hosting": ["self"]}},
        "classify": {"detectors": [{"detect": ["email"], "class": "personal"}]},
        "state": {"on_unavailable": "local"},
        "resilience": resilience,
        "settings": {"redis_url": dead_redis, "reload_interval_s": 0.05, "audit": ("/dev/full",)},
    }


def _refused(call: Any) -> int:
    try:
        call()
    except openai.APIStatusError as exc:
        return exc.status_code
    return 200


def _spill(stack: Stack, meter: QueueingEngine) -> None:
    """Fill self-eu's engine by its own reading, spill one request, break its metrics for a while, then drain."""
    capacity = stack.gateway.capacity
    meter.waiting = 500
    wait_for(lambda: capacity.full() == frozenset({"self-eu"}), what="self-eu full")
    spilled = stack.client().chat.completions.with_raw_response.create(model="chat", messages=PLAIN)
    assert spilled.headers["x-switchyard-spilled-from"] == "self-eu"
    meter.waiting, meter.metrics_status = 0, 500
    errors = capacity.gauges["self-eu"].failures
    wait_for(lambda: capacity.gauges["self-eu"].failures > errors, what="a failed poll")
    meter.metrics_status = 200
    wait_for(lambda: capacity.full() == frozenset(), what="self-eu open")


def _workload(stack: Stack, policy: Path, round_: int, meter: QueueingEngine) -> None:
    """One round of everything the dashboard and the alerts look at."""
    _spill(stack, meter)
    acme = stack.client()
    chat = acme.chat.completions
    for _ in range(3):
        chat.create(model="chat", messages=PLAIN)
    served = chat.with_raw_response.create(model="chat", messages=PERSONAL)  # the policy excludes cloud-us
    assert served.headers["x-switchyard-upstream"] == "self-eu"
    with chat.create(model="chat", messages=PLAIN, stream=True) as stream:
        list(stream)
    stack.upstreams["self-eu"].faults.append(Fault(cut_after=2))
    with pytest.raises(openai.APIError), chat.create(model="chat", messages=PLAIN, stream=True) as broken:
        list(broken)
    chat.create(model="cloud", messages=PLAIN)
    assert _refused(lambda: chat.create(model="cloud", messages=PERSONAL)) == 403
    stack.upstreams["self-eu"].faults.extend([Fault(status=503), Fault(status=503)])
    moved = chat.with_raw_response.create(model="chat", messages=PLAIN)
    assert moved.headers["x-switchyard-upstream"] == "cloud-us"
    assert _refused(lambda: stack.client(OTHER_KEY).chat.completions.create(model="chat", messages=PLAIN)) == 429
    slow = stack.client(THIRD_KEY).chat.completions
    assert {_refused(lambda: slow.create(model="chat", messages=PLAIN)) for _ in range(2)} >= {429}
    stack.upstreams["cloud-us"].faults.extend([Fault(status=503), Fault(status=503)])
    assert _refused(lambda: chat.create(model="cloud", messages=PLAIN)) == 502
    policy.write_text(policy.read_text() + f"\n# round {round_}\n")
    wait_for(lambda: f'switchyard_policy_reloads_total{{result="ok"}} {round_}.0' in _metrics(stack),
             what="policy reload")
    wait_for(lambda: not _open_circuits(stack), what="every circuit the round opened to be half-open again")


def _open_circuits(stack: Stack) -> frozenset[str]:
    """The upstreams a decision would leave out now, asked on the gateway's own loop."""

    async def blocked() -> frozenset[str]:
        return stack.gateway.circuits.blocked(time.monotonic(), OPEN_S)

    found: frozenset[str] = stack.loop.run(blocked())
    return found


def _metrics(stack: Stack) -> str:
    return httpx.get(stack.served.url + "/metrics").text


def _samples(text: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, set()).update(sample.labels)
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_prometheus(folder: Path, gateway_port: int) -> tuple[subprocess.Popen[bytes], str]:
    config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"}, "rule_files": [str(ALERTS)],
              "scrape_configs": [{"job_name": "switchyard",
                                  "static_configs": [{"targets": [f"127.0.0.1:{gateway_port}"]}]}]}
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = _free_port()
    process = subprocess.Popen(
        ["prometheus", f"--config.file={folder / 'prometheus.yml'}", f"--storage.tsdb.path={folder / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=error"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return httpx.get(url + "/-/ready").status_code == 200
        except httpx.HTTPError:
            return process.poll() is not None

    wait_for(ready, timeout=30, what="prometheus")
    assert process.poll() is None, "prometheus exited"
    return process, url


def query(url: str, expr: str) -> list[dict[str, Any]]:
    answer = httpx.get(url + "/api/v1/query", params={"query": expr}).json()
    assert answer["status"] == "success", (expr, answer)
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


def _scraped(url: str, stack: Stack) -> None:
    """Wait until Prometheus holds the gateway's current request count."""
    families = text_string_to_metric_families(_metrics(stack))
    total = sum(s.value for f in families for s in f.samples if s.name == "switchyard_requests_total")

    def seen() -> bool:
        found = query(url, "sum(switchyard_requests_total)")
        return bool(found) and float(found[0]["value"][1]) == total

    wait_for(seen, timeout=30, what="prometheus to scrape the gateway")


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    folder = tmp_path_factory.mktemp("deploy")
    loop = Loop()
    prometheus: subprocess.Popen[bytes] | None = None
    try:
        meter = QueueingEngine("meter", slots=2)  # only its /metrics page: self-eu's load, set by the workload
        sections = _policy_sections(f"redis://127.0.0.1:{_free_port()}/0", loop.serve(meter).url)
        stack = start_stack(loop, folder, names=("self-eu", "cloud-us"), settings=sections.pop("settings"),
                            models={"chat": {"candidates": ["self-eu", "cloud-us"]},
                                    "cloud": {"candidates": ["cloud-us"]}}, **sections)
        url = None
        if shutil.which("prometheus"):
            prometheus, url = _start_prometheus(folder, stack.served.port)
        _workload(stack, folder / "policy.yaml", 1, meter)
        if url:
            _scraped(url, stack)
        _workload(stack, folder / "policy.yaml", 2, meter)
        if url:
            _scraped(url, stack)
        yield Live(_samples(_metrics(stack)), url)
    finally:
        if prometheus is not None:
            prometheus.send_signal(signal.SIGTERM)
            prometheus.wait(timeout=30)
        loop.close()


def _labels_of(names: set[str], samples: dict[str, set[str]]) -> set[str]:
    labels = set().union(*(samples[name] for name in names if name in samples))
    return labels | {"le"} if any(name.endswith("_bucket") for name in names) else labels


@pytest.mark.parametrize("source", ["dashboard", "alerts"])
def test_every_query_uses_only_metrics_and_labels_the_gateway_exports(live: Live, source: str) -> None:
    exprs = dashboard_exprs() if source == "dashboard" else alert_exprs()
    assert exprs
    problems = []
    for expr in exprs:
        names = set(METRIC.findall(expr))
        for name in sorted(names - live.samples.keys()):
            problems.append(f"{name} is not exported (in: {expr})")
        for name, matchers in SELECTOR.findall(expr):
            for label in set(MATCHER.findall(matchers)) - _labels_of({name}, live.samples):
                problems.append(f"{name} has no label {label} (in: {expr})")
        grouped = {label.strip() for labels in GROUPING.findall(expr) for label in labels.split(",") if label.strip()}
        for label in sorted(grouped - _labels_of(names, live.samples)):
            problems.append(f"no metric of the query has label {label} (in: {expr})")
    assert not problems, "\n".join(problems)


def test_the_workload_left_a_sample_of_every_family_the_dashboard_needs(live: Live) -> None:
    used = {name for expr in dashboard_exprs() + alert_exprs() for name in METRIC.findall(expr)}
    assert len(used) >= 20
    assert used <= live.samples.keys()


def _evaluable(expr: str) -> str:
    for macro, value in MACROS.items():
        expr = expr.replace(macro, value)
    assert "$" not in expr, expr
    return expr


def test_every_dashboard_query_returns_numbers_from_prometheus(live: Live) -> None:
    if live.prometheus is None:
        pytest.skip("no prometheus binary (scripts/check-deploy installs Debian's prometheus)")
    empty = []
    for panel in panels():
        for target in panel["targets"]:
            values = [float(series["value"][1]) for series in query(live.prometheus, _evaluable(target["expr"]))]
            if not any(math.isfinite(v) for v in values):
                empty.append(f"{panel['title']}: {target['expr']} -> {values}")
    assert not empty, "\n".join(empty)


def test_every_alert_rule_evaluates_against_the_live_gateway(live: Live) -> None:
    url = live.prometheus
    if url is None:
        pytest.skip("no prometheus binary (scripts/check-deploy installs Debian's prometheus)")
    names = {rule["alert"] for rule in alert_rules()}

    def evaluated() -> dict[str, str]:
        groups = httpx.get(url + "/api/v1/rules").json()["data"]["groups"]
        return {rule["name"]: rule["health"] for group in groups for rule in group["rules"]
                if not rule["lastEvaluation"].startswith("0001")}  # Go's zero time: not evaluated yet

    wait_for(lambda: evaluated().keys() >= names, timeout=15, what="every alert rule evaluated")
    assert set(evaluated().values()) == {"ok"}, evaluated()
    for expr in alert_exprs():
        query(url, expr)  # parses and runs

# ------------------------------------------------------------------------------------------------ dashboard

TOPICS = {  # title words -> a metric the panel must query
    "requests by route and upstream": "switchyard_requests_total",
    "requests by tenant and endpoint": "switchyard_requests_total",
    "errors by route, upstream and status": "switchyard_requests_total",
    "upstream errors": "switchyard_upstream_errors_total",
    "latency p50 / p95 / p99": "switchyard_request_duration_seconds_bucket",
    "time to first token p50 / p95 / p99": "switchyard_time_to_first_token_seconds_bucket",
    "tokens / s by upstream": "switchyard_tokens_total",
    "cost per tenant": "switchyard_cost_usd_total",
    "cost per upstream": "switchyard_cost_usd_total",
    "savings": "switchyard_savings_usd_total",
    "served self-hosted": "switchyard_requests_total",
    "residency denials": "switchyard_residency_denied_total",
    "fallbacks": "switchyard_fallbacks_total",
    "circuit state": "switchyard_circuit_state",
    "budget remaining": "switchyard_budget_remaining_usd",
    "budget exhausted": "switchyard_budget_exhausted_total",
    "rate limited": "switchyard_rate_limited_total",
    "state errors": "switchyard_state_errors_total",
    "policy reloads": "switchyard_policy_reloads_total",
    "upstream full": "switchyard_upstream_full",
    "spills by route": "switchyard_spills_total",
    "spill cost": "switchyard_spill_cost_usd_total",
    "poll errors": "switchyard_capacity_poll_errors_total",
}


def test_the_dashboard_has_a_panel_for_each_topic() -> None:
    missing = []
    for words, metric in TOPICS.items():
        found = [p for p in panels() if words in p["title"].lower()
                 and any(metric in t["expr"] for t in p["targets"])]
        if not found:
            missing.append(f"a panel titled '...{words}...' querying {metric}")
    assert not missing, "\n".join(missing)


def test_latency_panels_show_three_quantiles_from_histogram_buckets() -> None:
    for panel in panels():
        if "p50 / p95 / p99" in panel["title"]:
            exprs = " ".join(t["expr"] for t in panel["targets"])
            for q in ("0.5", "0.95", "0.99"):
                assert f"histogram_quantile({q}," in exprs, panel["title"]


def test_self_hosted_share_names_the_self_hosted_upstreams_in_a_variable() -> None:
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert "self_hosted" in variables
    share = [p for p in panels() if "self-hosted" in p["title"].lower()]
    assert share
    assert all('upstream=~"$self_hosted"' in t["expr"] for p in share for t in p["targets"])


def test_the_dashboard_layout_is_sound() -> None:
    board = dashboard()
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], str] = {}
    for panel in board["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0, panel["title"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]
    for panel in panels():
        assert panel["targets"], panel["title"]
        assert panel.get("description"), panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}"


# ------------------------------------------------------------------------------------------------ manifests

def k8s_docs() -> list[dict[str, Any]]:
    return [doc for path in sorted(K8S.glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text()) if doc]


def _find(kind: str, name: str) -> dict[str, Any]:
    found = [d for d in k8s_docs() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, (kind, name)
    return found[0]


def _gateway() -> tuple[dict[str, Any], dict[str, Any]]:
    deployment = _find("Deployment", "switchyard")
    pod = deployment["spec"]["template"]["spec"]
    return pod, next(c for c in pod["containers"] if c["name"] == "switchyard")


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_k8s_prestop_plus_drain_fits_in_the_grace_period() -> None:
    pod, container = _gateway()
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop = float(command[1])
    args = container.get("args", [])
    drain = float(args[args.index("--drain-s") + 1]) if "--drain-s" in args else float(_env(container)[
        "SWITCHYARD_DRAIN_S"])
    assert pre_stop > 0
    assert pre_stop + drain < pod["terminationGracePeriodSeconds"]


def test_the_image_passes_drain_and_workers_from_the_environment() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    entrypoint = json.loads(re.search(r"^ENTRYPOINT (.+)$", dockerfile, re.M).group(1))  # type: ignore[union-attr]
    script = entrypoint[2]
    assert script.startswith("exec switchyard serve ")
    assert '--drain-s "${SWITCHYARD_DRAIN_S}"' in script
    assert '--workers "${SWITCHYARD_WORKERS}"' in script
    assert "--policy /app/policies" in script
    assert re.search(r"^USER 10001", dockerfile, re.M)
    assert "/healthz" in re.search(r"^HEALTHCHECK .*(\n {4}.*)*", dockerfile, re.M).group(0)  # type: ignore[union-attr]



def test_the_build_context_holds_what_the_image_copies() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    allowed = {line[1:].rstrip("/") for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
               if line.startswith("!")}
    sources = [word.rstrip("/") for line in re.findall(r"^COPY (?!--from)(.+)$", dockerfile, re.M)
               for word in line.split()[:-1]]
    assert sources
    assert set(sources) <= allowed

def test_k8s_probes_use_readyz_and_healthz() -> None:
    _, container = _gateway()
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container["readinessProbe"]["httpGet"]["port"] in ports
    assert ports["http"] == 8080


def test_k8s_pods_run_as_non_root_on_a_read_only_root() -> None:
    for deployment in (d for d in k8s_docs() if d["kind"] == "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]
            assert container["resources"]["requests"]
            assert container["resources"]["limits"]["memory"]


def test_k8s_scrape_annotations_point_at_metrics() -> None:
    deployment = _find("Deployment", "switchyard")
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert annotations["prometheus.io/port"] == "8080"


def test_k8s_secrets_are_referenced_never_committed() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    assert listed | {"kustomization.yaml", "secret.example.yaml"} == {p.name for p in K8S.glob("*.yaml")}
    assert not [d for name in listed for d in yaml.safe_load_all((K8S / name).read_text()) if d["kind"] == "Secret"]
    example = yaml.safe_load((K8S / "secret.example.yaml").read_text())
    _, container = _gateway()
    refs = [v["secretKeyRef"] for v in _env(container).values() if isinstance(v, dict) and "secretKeyRef" in v]
    assert refs
    for ref in refs:
        assert ref["name"] == example["metadata"]["name"]
        assert ref["key"] in example["stringData"]
    assert all(not v or "REPLACE_ME" in v for v in example["stringData"].values())


def test_k8s_gateway_shares_state_through_the_redis_service() -> None:
    _, container = _gateway()
    service = _find("Service", "switchyard-redis")
    url = _env(container)["SWITCHYARD_REDIS_URL"]
    assert url.startswith(f"redis://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}/")
    redis = _find("Deployment", "switchyard-redis")
    assert service["spec"]["selector"].items() <= redis["spec"]["template"]["metadata"]["labels"].items()
    assert _find("HorizontalPodAutoscaler", "switchyard")["apiVersion"] == "autoscaling/v2"
    assert _find("PodDisruptionBudget", "switchyard")["apiVersion"] == "policy/v1"


def test_the_shipped_policies_load() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    [generated] = kustomization["configMapGenerator"]
    _, container = _gateway()
    # values from the Secret stand in as placeholders; plain values are used as the Deployment sets them
    env = dict.fromkeys(_env(container), "x") | {"SWITCHYARD_TENANT_KEY_HASH": "sha256:" + "0" * 64}
    env |= {k: v for k, v in _env(container).items() if isinstance(v, str)}
    for file in generated["files"]:
        assert load_policy(K8S / file, environ=env).doc.tenants
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    gateway_env = compose["services"]["switchyard"]["environment"]
    assert load_policy(DEPLOY / "compose-policy", environ=dict(gateway_env)).doc.upstreams


# ------------------------------------------------------------------------------------------------ compose

def test_compose_wires_the_stack_together() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    gateway = services["switchyard"]
    assert gateway["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
    assert gateway["environment"]["SWITCHYARD_REDIS_URL"].startswith("redis://redis:6379/")
    assert "./compose-policy:/app/policies:ro" in gateway["volumes"]
    grace = int(gateway["stop_grace_period"].rstrip("s"))
    assert grace > int(gateway["environment"]["SWITCHYARD_DRAIN_S"])
    policy = load_policy(DEPLOY / "compose-policy", environ={})
    vllm_model = services["vllm"]["command"][services["vllm"]["command"].index("--model") + 1]
    selfhosted = [u for u in policy.doc.upstreams.values() if u.hosting == "self"]
    assert [u.model for u in selfhosted] == [vllm_model]
    assert str(selfhosted[0].base_url).startswith("http://vllm:8000/")
    assert services["vllm"]["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), source
    scrape = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert scrape["scrape_configs"][0]["static_configs"][0]["targets"] == ["switchyard:8080"]
    assert scrape["rule_files"] == ["alerts.yaml"]


def test_grafana_is_provisioned_with_the_datasource_and_dashboard_compose_mounts() -> None:
    provisioning = DEPLOY / "grafana" / "provisioning"
    [source] = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())["datasources"]
    [provider] = yaml.safe_load((provisioning / "dashboards" / "switchyard.yaml").read_text())["providers"]
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert variables["datasource"]["current"]["value"] == source["uid"]
    assert source["url"] == "http://prometheus:9090"
    grafana = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]["grafana"]
    assert f"./grafana/switchyard.json:{provider['options']['path']}/switchyard.json:ro" in grafana["volumes"]
