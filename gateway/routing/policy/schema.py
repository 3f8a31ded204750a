"""The policy's shape, validated once at load: unknown keys are errors."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

Name = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/@-]*$")]
Capability = Literal["tools", "json", "vision", "continuation", "responses", "messages"]
REQUEST_FEATURES: frozenset[Capability] = frozenset({"tools", "json", "vision", "responses"})  # not the others
Objective = Literal["cost", "latency", "priority"]
Hosting = Literal["self", "third_party"]
KEY_HASH = re.compile(r"^sha256:[0-9a-f]{64}$")


class Strict(BaseModel):
    """A section of the policy: frozen, and every key must be known."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Cost(Strict):
    """A token price in USD per million tokens, or a self-hosted GPU's hourly cost and throughput; either with
    prices of its own for prompt tokens read from or written to a prompt cache."""

    input_per_mtok: float | None = Field(default=None, ge=0)
    output_per_mtok: float | None = Field(default=None, ge=0)
    gpu_hour_usd: float | None = Field(default=None, ge=0)
    tokens_per_second: float | None = Field(default=None, gt=0)
    cache_read_per_mtok: float | None = Field(default=None, ge=0)
    cache_write_per_mtok: float | None = Field(default=None, ge=0)
    cache_write_1h_per_mtok: float | None = Field(default=None, ge=0)  # Anthropic's one-hour cache (`ttl: 1h`)

    @model_validator(mode="after")
    def _one_form(self) -> Cost:
        tokens = (self.input_per_mtok, self.output_per_mtok)
        gpu = (self.gpu_hour_usd, self.tokens_per_second)
        if (None not in tokens and gpu == (None, None)) or (None not in gpu and tokens == (None, None)):
            return self
        raise ValueError("give either input_per_mtok and output_per_mtok, or gpu_hour_usd and tokens_per_second")

    def per_token(self) -> tuple[float, float, float, float, float]:
        """USD per prompt, completion, cache-read, cache-write and one-hour cache-write token (a cache price not
        given: the prompt's; a one-hour write price not given: the write price)."""
        if self.gpu_hour_usd is not None and self.tokens_per_second is not None:
            per_in = per_out = self.gpu_hour_usd / 3600 / self.tokens_per_second
        else:
            per_in, per_out = (self.input_per_mtok or 0.0) / 1e6, (self.output_per_mtok or 0.0) / 1e6
        read, write, hour = self.cache_read_per_mtok, self.cache_write_per_mtok, self.cache_write_1h_per_mtok
        per_write = per_in if write is None else write / 1e6
        return (per_in, per_out, per_in if read is None else read / 1e6, per_write,
                per_write if hour is None else hour / 1e6)


MIB = 1 << 20


class UpstreamLimits(Strict):
    """How much of one upstream answer the gateway reads; past a limit the attempt fails (memory stays bounded)."""

    body_bytes: int = Field(default=64 * MIB, gt=0)  # an answer as it comes off the wire, a stream's included
    decompressed_bytes: int = Field(default=64 * MIB, gt=0)  # the same answer once gzip or deflate is undone
    error_body_bytes: int = Field(default=64 << 10, gt=0)  # of an error answer; the rest is never read
    sse_event_bytes: int = Field(default=4 * MIB, gt=0)  # one stream event, up to its blank line


class Capacity(Strict):
    """Where a self-hosted engine's load is read, and when it counts as full."""

    engine: Literal["vllm", "sglang", "llamacpp"]
    metrics_url: Annotated[str, Field(pattern=r"^https?://")] | None = None
    max_waiting: int | None = Field(default=None, ge=0)
    max_kv_cache: float | None = Field(default=None, gt=0, le=1)
    poll_ms: int = Field(default=500, ge=50, le=3_600_000)
    stale_ms: int = Field(default=3000, gt=0)
    when_unknown: Literal["open", "full"] = "open"


NEVER_FORWARDED = frozenset({  # a client's credentials, and what would change how the upstream reads the request
    "authorization", "api-key", "x-api-key", "cookie", "proxy-authorization", "host", "content-length",
    "transfer-encoding", "connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade", "expect"})


class Upstream(Strict):
    """One place a request can be sent."""

    kind: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")] = "openai"
    base_url: Annotated[str, Field(pattern=r"^https?://")] | None = None
    model: str = Field(min_length=1)
    api_key: SecretStr | None = None
    region: str | None = None
    hosting: Hosting = "third_party"
    cost: Cost | None = None
    context_window: int | None = Field(default=None, gt=0)
    capabilities: frozenset[Capability] = frozenset()
    max_concurrency: int | None = Field(default=None, gt=0)
    forward_headers: frozenset[str] = frozenset()
    limits: UpstreamLimits = UpstreamLimits()
    capacity: Capacity | None = None

    @property
    def lists_capabilities(self) -> bool:
        """Whether the policy lists this upstream's capabilities (an empty list counts)."""
        return "capabilities" in self.model_fields_set

    def supports(self, capability: str) -> bool:
        """Whether a request needing capability may go here: listed ones only, else every request feature."""
        return capability in (self.capabilities if self.lists_capabilities else REQUEST_FEATURES)

    @field_validator("forward_headers")
    @classmethod
    def _lower(cls, names: frozenset[str]) -> frozenset[str]:
        lowered = frozenset(name.lower() for name in names)
        if lowered & NEVER_FORWARDED:
            raise ValueError("credentials and framing headers are never forwarded")
        return lowered

    @field_validator("api_key", mode="before")
    @classmethod
    def _key_as_sent(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        value = value.strip()  # a key read from a file or a Secret often ends in a newline
        if not value.isascii() or any(not char.isprintable() or char.isspace() for char in value):
            raise ValueError("holds a space, a control character or non-ASCII, which no key has (its value is not "
                             "shown)")
        return value or None


class LatencySlo(Strict):
    """The time to first token a route aims for."""

    ttft_p95_ms: float = Field(gt=0)


class Circuit(Strict):
    """When an upstream is taken out of rotation, and for how long."""

    failures: int = Field(default=5, ge=1)
    open_s: float = Field(default=20, gt=0)  # the longest an opening lasts: how long a recovered upstream may wait
    first_open_s: float = Field(default=5, gt=0)  # the first opening in a row; each failed probe doubles it
    # a timeout counts against the circuit only for a request this small: a big one may be slow on its own account
    small_request_bytes: int = Field(default=16 << 10, ge=0)
    small_max_tokens: int = Field(default=1024, ge=0)


class Resilience(Strict):
    """Retries, timeouts and circuits; defaults for every route."""

    attempts_per_upstream: int = Field(default=2, ge=1, le=10)
    backoff_ms: tuple[float, float] = (200, 2000)
    connect_timeout_s: float = Field(default=5, gt=0)
    per_try_timeout_s: float = Field(default=30, gt=0)
    ttft_timeout_s: float = Field(default=10, gt=0)
    stream_idle_timeout_s: float = Field(default=15, gt=0)
    deadline_s: float = Field(default=120, gt=0)
    circuit: Circuit = Circuit()


class Route(Strict):
    """A name clients send as `model`, and who may serve it."""

    candidates: tuple[Name, ...] = Field(min_length=1)
    objective: Objective = "priority"
    latency_slo: LatencySlo | None = None
    default_max_tokens: int = Field(default=512, gt=0)
    resilience: Resilience | None = None
    baseline: Name | None = None


class DataClass(Strict):
    """Where data of one sensitivity may be processed."""

    hosting: frozenset[Hosting] | None = None
    regions: frozenset[str] | None = None


class DetectorRule(Strict):
    """Content detectors and the data class their hit raises a request to."""

    detect: tuple[str, ...] = ()
    regex: dict[Name, str] = {}
    data_class: str = Field(alias="class")


class Classify(Strict):
    """How a request's data class is found."""

    detectors: tuple[DetectorRule, ...] = ()
    header: str = "x-switchyard-data-class"
    # The class of a request holding content no detector can read (images, audio, files, token ids); None: the most
    # sensitive class defined, so what cannot be inspected is never assumed harmless.
    unreadable: str | None = None

    @field_validator("header")
    @classmethod
    def _lower(cls, name: str) -> str:
        return name.lower()


class RouteTo(Strict):
    """Degrade to these upstreams once a budget is spent."""

    route_to: tuple[Name, ...] = Field(min_length=1)


class Budget(Strict):
    """A tenant's spend limit."""

    usd_per_day: float | None = Field(default=None, ge=0)
    usd_per_month: float | None = Field(default=None, ge=0)
    when_exhausted: Literal["reject"] | RouteTo = "reject"


class RateLimit(Strict):
    """A tenant's request and token rates."""

    requests_per_minute: int | None = Field(default=None, gt=0)
    tokens_per_minute: int | None = Field(default=None, gt=0)


class Tenant(Strict):
    """Who holds keys, what they may use, and where their data may go."""

    keys: tuple[str, ...] = Field(min_length=1)
    data_class: str | None = None
    regions: frozenset[str] | None = None
    models: tuple[Name, ...] | None = None
    budget: Budget | None = None
    rate_limit: RateLimit | None = None

    @field_validator("keys")
    @classmethod
    def _hashed(cls, keys: tuple[str, ...]) -> tuple[str, ...]:
        for key in keys:
            if not KEY_HASH.match(key):
                raise ValueError("keys must be 'sha256:' + 64 hex digits (see `switchyard keys new`), never a raw key")
        return keys


class Match(Strict):
    """The conditions a rule applies under; all given ones must hold."""

    route: tuple[Name, ...] | None = None
    tenant: tuple[Name, ...] | None = None
    data_class: tuple[str, ...] | None = None
    header: dict[str, str] = {}
    prompt_tokens_over: int | None = Field(default=None, ge=0)
    has_tools: bool | None = None
    stream: bool | None = None

    @field_validator("route", "tenant", "data_class", mode="before")
    @classmethod
    def _one_is_a_list(cls, value: object) -> object:
        return (value,) if isinstance(value, str) else value

    @field_validator("header")
    @classmethod
    def _lower_names(cls, value: dict[str, str]) -> dict[str, str]:
        return {name.lower(): wanted for name, wanted in value.items()}


class Rule(Strict):
    """Narrows or re-ranks the candidates of matching requests; first match wins."""

    name: Name
    match: Match = Match()
    prefer: tuple[Name, ...] = ()
    exclude: tuple[Name, ...] = ()
    objective: Objective | None = None


class Admin(Strict):
    """Keys for the admin endpoints, hashed like tenants' keys."""

    keys: tuple[str, ...] = ()

    @field_validator("keys")
    @classmethod
    def _hashed(cls, keys: tuple[str, ...]) -> tuple[str, ...]:
        return Tenant._hashed(keys)


class State(Strict):
    """What to do when the shared state (Redis) cannot be reached."""

    on_unavailable: Literal["fail_closed", "local"] = "fail_closed"


class Document(Strict):
    """A whole policy, as written."""

    version: Literal[1]
    upstreams: dict[Name, Upstream] = Field(min_length=1)
    models: dict[Name, Route] = Field(min_length=1)
    tenants: dict[Name, Tenant] = Field(min_length=1)
    data_classes: dict[Name, DataClass] = {}
    classify: Classify = Classify()
    rules: tuple[Rule, ...] = ()
    resilience: Resilience = Resilience()
    admin: Admin = Admin()
    state: State = State()
    baseline: Name | None = None
