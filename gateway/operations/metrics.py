"""Every Prometheus collector the gateway exports, defined once; the only importer of prometheus_client."""

from __future__ import annotations

import importlib.metadata
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
    start_http_server,
)
from prometheus_client.multiprocess import MultiProcessCollector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
METRICS_MARKER = ".switchyard-metrics"
METRICS_FILE = re.compile(r"(counter|gauge_[a-z]+|histogram|summary)_\d+\.db")  # prometheus_client's own names
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


def prepare_multiprocess(folder: str) -> None:
    """Point every worker at a folder for shared metric files, emptied of an earlier run's; call before workers start.

    ValueError if the folder holds anything the gateway did not write there: it is never emptied blindly.
    """
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    marker = path / METRICS_MARKER
    found = [p for p in path.iterdir() if p != marker]
    strangers = [p.name for p in found if not (marker.exists() and METRICS_FILE.fullmatch(p.name) and p.is_file())]
    if strangers:
        shown = ", ".join(sorted(strangers)[:5]) + (", ..." if len(strangers) > 5 else "")
        raise ValueError(f"SWITCHYARD_METRICS_DIR {folder} holds files the gateway did not write ({shown}): give "
                         "it an empty folder of its own")
    for stale in found:
        stale.unlink()
    marker.write_text("switchyard's metric files; emptied at each start\n")
    os.environ[MULTIPROC_ENV] = folder


class Metrics:
    """The gateway's collectors, with cached label children for the request path."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self._registry = registry or CollectorRegistry(auto_describe=True)
        self._define_requests(self._registry)
        self._define_upstreams(self._registry)
        self._define_accounting(self._registry)
        self._define_audit(self._registry)
        self._define_routing(self._registry)
        self._define_capacity(self._registry)
        self._define_process(self._registry)
        self._policies: set[str] = set()
        self._children: dict[object, dict[tuple[str, ...], Any]] = {}
        self._counts: dict[tuple[Counter | Gauge, tuple[str, ...]], float] = {}
        self._settings: dict[tuple[Gauge, tuple[str, ...]], float] = {}
        self._observed: dict[tuple[Histogram, tuple[str, ...]], list[float]] = {}  # the values, in order
        self._read: list[tuple[Gauge, Callable[[], Mapping[str, float]]]] = []  # gauges read from their owner

    def _define_requests(self, r: CollectorRegistry) -> None:
        """The collectors of requests answered: counts, latencies, tokens and cost."""
        self.requests = Counter("switchyard_requests",
                                "Requests answered, by tenant, endpoint, route, upstream and HTTP status.",
                                ["tenant", "endpoint", "route", "upstream", "status"], registry=r)
        self.duration = Histogram("switchyard_request_duration_seconds", "Time from request to last byte.",
                                  ["route", "upstream"], buckets=LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("switchyard_time_to_first_token_seconds", "Time from request to first stream event.",
                              ["route", "upstream"], buckets=LATENCY_BUCKETS, registry=r)
        self.tokens = Counter("switchyard_tokens",
                              "Tokens processed, by tenant, upstream and type (prompt or completion).",
                              ["tenant", "upstream", "type"], registry=r)
        self.cache_tokens = Counter("switchyard_cache_tokens",
                                    "Prompt tokens read from (read) or written to (write) the upstream's prompt cache.",
                                    ["tenant", "upstream", "kind"], registry=r)
        self.cost = Counter("switchyard_cost_usd", "Cost in USD at the policy's prices.", ["tenant", "upstream"],
                            registry=r)
        self.translation_dropped = Counter("switchyard_translation_dropped",
                                           "Request fields a translation could not carry, by upstream and field.",
                                           ["upstream", "field"], registry=r)

    def _define_upstreams(self, r: CollectorRegistry) -> None:
        """The collectors of upstream attempts: errors, load in flight, fallbacks, retries, circuits."""
        self.upstream_errors = Counter("switchyard_upstream_errors", "Failed upstream attempts, by reason.",
                                       ["upstream", "reason"], registry=r)
        self.inflight = Gauge("switchyard_inflight_requests", "Requests in flight to each upstream.", ["upstream"],
                              multiprocess_mode="livesum", registry=r)
        self.fallbacks = Counter("switchyard_fallbacks", "Requests moved to another candidate after a failure.",
                                 ["route", "from_upstream", "to_upstream", "reason"], registry=r)
        self.retries = Counter("switchyard_retries", "Attempts repeated on the same upstream, by reason.",
                               ["upstream", "reason"], registry=r)
        self.circuit_state = Gauge("switchyard_circuit_state", "Circuit per upstream: 0 closed, 1 half-open, 2 open.",
                                   ["upstream"], multiprocess_mode="max", registry=r)
        self.stream_failures = Counter("switchyard_stream_failures", "Streams that broke after bytes went out.",
                                       ["upstream", "reason", "outcome"], registry=r)

    def _define_accounting(self, r: CollectorRegistry) -> None:
        """The collectors of budgets, rate limits, savings and the state backend."""
        self.budget_remaining = Gauge("switchyard_budget_remaining_usd", "Budget left in the current period.",
                                      ["tenant", "window"], multiprocess_mode="mostrecent", registry=r)
        self.budget_exhausted = Counter("switchyard_budget_exhausted", "Requests over budget, by what was done.",
                                        ["tenant", "action"], registry=r)
        self.rate_limited = Counter("switchyard_rate_limited", "Requests refused by a rate limit.",
                                    ["tenant", "kind"], registry=r)
        self.savings = Counter("switchyard_savings_usd", "What requests would have cost more at the baseline.",
                               ["tenant", "route"], registry=r)
        self.state_errors = Counter("switchyard_state_errors", "Failed calls to the state backend.",
                                    ["backend", "op"], registry=r)
        self.budget_overshoot = Counter("switchyard_budget_overshoot_usd", "Cost above what was reserved.",
                                        ["tenant"], registry=r)
        self.usage_clamped = Counter("switchyard_usage_clamped", "Usage reports past what a request could produce.",
                                     ["upstream"], registry=r)

    def _define_audit(self, r: CollectorRegistry) -> None:
        """The collectors of the audit trail."""
        self.audit_errors = Counter("switchyard_audit_write_errors", "Audit records not written, by sink.", ["sink"],
                                    registry=r)
        self.audit_unauthenticated = Counter("switchyard_audit_unauthenticated",
                                             "Unauthenticated requests, audited in one sampled record a second.",
                                             registry=r)

    def _define_routing(self, r: CollectorRegistry) -> None:
        """The collectors of routing decisions and the loaded policy."""
        self.decisions = Counter("switchyard_decisions", "Routing decisions, by route, rule, data class and upstream.",
                                 ["route", "rule", "data_class", "upstream"], registry=r)
        self.excluded = Counter("switchyard_candidates_excluded", "Candidates a decision left out, and why.",
                                ["route", "upstream", "reason"], registry=r)
        self.residency_denied = Counter("switchyard_residency_denied", "Requests refused for residency.",
                                        ["tenant", "data_class"], registry=r)
        self.policy_reloads = Counter("switchyard_policy_reloads", "Policy reloads, by result.", ["result"],
                                      registry=r)
        self.policy_info = Gauge("switchyard_policy_info", "The loaded policy's hash.", ["hash"],
                                 multiprocess_mode="liveall", registry=r)

    def _define_capacity(self, r: CollectorRegistry) -> None:
        """The collectors of self-hosted engines' load and the spills it causes."""
        self.upstream_load = Gauge("switchyard_upstream_load", "A self-hosted engine's last reading, by signal "
                                   "(waiting, running, kv_cache).", ["upstream", "signal"],
                                   multiprocess_mode="mostrecent", registry=r)
        self.upstream_full = Gauge("switchyard_upstream_full", "1 while an upstream counts as full, else 0.",
                                   ["upstream"], multiprocess_mode="max", registry=r)
        self.spills = Counter("switchyard_spills", "Requests served elsewhere because their first choice was full.",
                              ["route", "from", "to"], registry=r)
        self.spill_cost = Counter("switchyard_spill_cost_usd", "What spilled requests cost beyond the same tokens "
                                  "on the full upstream.", ["tenant", "route"], registry=r)
        self.capacity_poll_errors = Counter("switchyard_capacity_poll_errors", "Reads of an engine's metrics that "
                                            "gave no reading.", ["upstream"], registry=r)

    def _define_process(self, r: CollectorRegistry) -> None:
        """The build's version and, without workers, the process' own collectors."""
        self.build_info = Gauge("switchyard_build_info", "The running gateway's version.", ["version"],
                                multiprocess_mode="max", registry=r)
        self.build_info.labels(_version()).set(1)
        if not os.environ.get(MULTIPROC_ENV):  # each worker's own: prometheus_client cannot sum them
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)

    @property
    def registry(self) -> CollectorRegistry:
        """The registry, with every tallied update applied."""
        self.flush()
        return self._registry

    def child(self, collector: Counter | Gauge | Histogram, *labels: str) -> Any:
        """The labelled child of collector, cached: labels() is too slow for every request."""
        children = self._children.get(collector)
        if children is None:
            children = self._children[collector] = {}
        found = children.get(labels)
        if found is None:  # an unlabelled collector is its own child: labels() refuses it
            found = children[labels] = collector.labels(*labels) if labels else collector
        return found

    def count(self, collector: Counter | Gauge, *labels: str, amount: float = 1.0) -> None:
        """Add amount to a counter's (or a gauge's) labelled child: tallied here, applied at the next flush."""
        key = (collector, labels)
        self._counts[key] = self._counts.get(key, 0.0) + amount

    def read_at_flush(self, gauge: Gauge, values: Callable[[], Mapping[str, float]]) -> None:
        """Set gauge's children from values() (label -> value) at every flush, rather than at every change."""
        self._read.append((gauge, values))

    def set(self, gauge: Gauge, value: float, *labels: str) -> None:
        """Set a gauge's labelled child at the next flush; the last value set wins."""
        self._settings[(gauge, labels)] = value

    def observe(self, histogram: Histogram, value: float, *labels: str) -> None:
        """Record a value in a histogram's labelled child (tallied here, applied at the next flush)."""
        key = (histogram, labels)
        values = self._observed.get(key)
        if values is None:
            self._observed[key] = [value]
        else:
            values.append(value)

    def flush(self) -> None:
        """Apply the tallied updates to the collectors.

        prometheus_client takes a lock (and, with workers, writes a file) on every update; updates on the request
        path (counters, histograms, requests in flight, budget left) only go into plain dictionaries, and this runs
        at each scrape and once a second, through prometheus_client's public API only. Gauges that change rarely
        (circuit state, policy) are set at once.
        """
        counts, self._counts = self._counts, {}
        for (collector, labels), amount in counts.items():
            child = self.child(collector, *labels)  # shown from its first update, even one netting zero
            if amount:
                child.inc(amount)
        for gauge, read in self._read:
            for label, value in read().items():
                self.child(gauge, label).set(value)
        settings, self._settings = self._settings, {}
        for (gauge, labels), value in settings.items():
            self.child(gauge, *labels).set(value)
        observed, self._observed = self._observed, {}
        for (histogram, labels), values in observed.items():
            observe = self.child(histogram, *labels).observe  # about 1.5 us a value, once a second, off the request
            for value in values:
                observe(value)

    def set_policy(self, digest: str) -> None:
        """Show which policy is loaded: the current hash at 1, every earlier one removed (at 0 with workers, whose
        metric files cannot forget a series)."""
        if os.environ.get(MULTIPROC_ENV):
            for earlier in self._policies - {digest}:
                self.policy_info.labels(earlier).set(0)
        else:
            self.policy_info.clear()
        self._policies.add(digest)
        self.policy_info.labels(digest).set(1)

    def show_circuits(self, states: dict[str, int]) -> None:
        """Give every upstream of the policy a circuit-state sample; drop the samples of upstreams it no longer has."""
        children = self._children.setdefault(self.circuit_state, {})
        for labels in [labels for labels in children if labels[0] not in states]:
            if not os.environ.get(MULTIPROC_ENV):  # a worker's metric file keeps the series until the next start
                del children[labels]
                self.circuit_state.remove(*labels)
        for name, state in states.items():
            self.child(self.circuit_state, name).set(state)

    def exposition(self) -> bytes:
        """The text format of every metric, summed over workers in multiprocess mode."""
        self.flush()
        if os.environ.get(MULTIPROC_ENV):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self._registry)


def serve_metrics(host: str, port: int, metrics: Metrics | None = None) -> Callable[[], None]:
    """Serve the metrics on a port of their own, from a thread; returns what stops it.

    In multiprocess mode (metrics None) every worker's, summed from their files; else metrics' own registry, as
    its last flush (at most a second ago) left it. ValueError when the port cannot be had.
    """
    if metrics is None:
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry = metrics._registry
    try:
        server, thread = start_http_server(port, host, registry=registry)
    except OSError as exc:
        raise ValueError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from None

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join()
    return stop


def _version() -> str:
    """The installed package's version, or 'unknown' in a checkout that was never installed."""
    try:
        return importlib.metadata.version("switchyard")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
