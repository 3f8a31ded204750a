"""Every part the gateway is built from, made once per process from its settings, and what it serves now."""

from __future__ import annotations

import logging
import os

from gateway.delivery.dispatch import Dispatcher, Inflight
from gateway.errors import GatewayError
from gateway.inbound.messages.adapter import MessagesInbound
from gateway.inbound.openai import OpenAIInbound
from gateway.operations.audit import AuditLog, Seal, read_key, sinks_for
from gateway.operations.metrics import Metrics
from gateway.operations.reload import Reloader
from gateway.pipeline.inbound import Inbound
from gateway.pipeline.pipeline import Pipeline
from gateway.pipeline.runtime import Runtime
from gateway.routing.policy.loader import load_policy
from gateway.routing.policy.model import Policy
from gateway.serving.admin import Admin
from gateway.serving.settings import Settings
from gateway.state.base import Backend
from gateway.state.latency import LatencyTracker
from gateway.state.ledger import Ledger
from gateway.state.memory import MemoryBackend
from gateway.state.redis import RedisBackend
from gateway.state.retry_budget import RetryBudget
from gateway.upstreams.catalog import LitellmCatalog

logger = logging.getLogger("switchyard.app")


class Components:
    """The metrics, state, dispatcher, audit trail, pipeline and inbound formats of one process.

    The policy is loaded at once, so that a bad one stops the process before it serves; the runtime (the policy
    with its upstream clients) and the reloader exist while the lifespan runs.
    """

    def __init__(self, settings: Settings, policy: Policy | None = None, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.policy = policy or load_policy(settings.policy, catalog=LitellmCatalog())
        self.policy_path = os.path.abspath(settings.policy)
        self.metrics = metrics or Metrics()
        self.latency = LatencyTracker()
        self.dispatcher = Dispatcher(self.metrics, Inflight(), RetryBudget())
        self.circuits = self.dispatcher.circuits
        backend: Backend = MemoryBackend()
        if settings.redis_url:
            backend = RedisBackend(settings.redis_url, settings.redis_timeout_s)
        self.ledger = Ledger(backend, self.metrics)
        self.audit = audit_log(settings, self.metrics)
        self.pipeline = Pipeline(self.metrics, self.dispatcher, self.latency, self.ledger, self.audit,
                                 settings.max_body_bytes)
        self.capacity = self.pipeline.capacity
        self.admin = Admin(self.ledger, settings.admin_key)
        self.openai = OpenAIInbound(backend if isinstance(backend, RedisBackend) else None)
        self.messages = MessagesInbound(self.metrics)
        self.inbounds = by_path(self.openai, self.messages)  # a new inbound format is registered here
        self.runtime: Runtime | None = None
        self.reloader: Reloader | None = None

    def ready(self) -> Runtime:
        """The runtime; 503 not_ready before the lifespan made one."""
        if self.runtime is None:
            raise GatewayError("the gateway is not ready", status=503, code="not_ready")
        return self.runtime


def by_path(*inbounds: Inbound) -> dict[str, Inbound]:
    """Each inbound format by the client paths it serves."""
    return {path: inbound for inbound in inbounds for path in inbound.endpoints}


def audit_log(settings: Settings, metrics: Metrics) -> AuditLog:
    """The audit trail the settings ask for, sealed with their key; a warning when it is not keyed."""
    seal = Seal(read_key(settings.audit_key_file))
    audit = AuditLog(sinks_for(settings.audit, seal), metrics, seal)
    if settings.audit and seal.key is None:
        logger.warning("the audit trail is not keyed (no --audit-key-file or $SWITCHYARD_AUDIT_KEY): anyone who "
                       "can write its files can rewrite them undetected")
    return audit
