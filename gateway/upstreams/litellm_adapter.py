"""Upstreams whose wire format is not OpenAI's (Anthropic, Gemini, Bedrock, Vertex AI...), through litellm.

The only importer of litellm, and the one place its exceptions are met. litellm translates each request, sends it
over this upstream's own HTTP client (gateway/upstreams/transport.py: no redirect followed, answers bounded) and
maps the provider's errors; gateway/upstreams/translate.py writes its answers in OpenAI's wire format.

It is imported only when a policy names a kind other than `openai`, and it imports litellm only when first used:
then, offline and with litellm's bundled price map, so that the import reaches no network.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import re
import sys
from collections.abc import Coroutine, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import httpx
import orjson

from gateway.errors import UpstreamCut, UpstreamError, UpstreamStatus, UpstreamTimeout, UpstreamUnavailable
from gateway.upstreams.answers import Answer, EventStream, Lifetimes
from gateway.upstreams.spec import UpstreamSpec
from gateway.upstreams.translate import (
    AnthropicFrames,
    Frames,
    GeminiFrames,
    completion_body,
    translated,
    wrapped,
)
from gateway.upstreams.transport import ATTEMPT, Attempt, BoundedTransport

# Switches litellm reads from the environment when it is imported (no Python setting exists that early): its
# bundled price map, not a download, and no fetching of blog posts, beta-header lists or tokenizers. An
# operator's own value wins. The SDK itself sends no telemetry.
OFFLINE = (("LITELLM_LOCAL_MODEL_COST_MAP", "True"), ("LITELLM_OFFLINE_MODE", "true"))
JSON = b"application/json"
FORWARDED_HEADERS = frozenset({"traceparent", "tracestate", "x-request-id"})
CHAT_PARAMS = frozenset({
    "messages", "tools", "tool_choice", "parallel_tool_calls", "functions", "function_call", "response_format",
    "max_tokens", "max_completion_tokens", "temperature", "top_p", "n", "stop", "presence_penalty",
    "frequency_penalty", "logit_bias", "logprobs", "top_logprobs", "seed", "user", "reasoning_effort",
    "modalities", "audio", "prediction", "web_search_options", "stream_options",
})
OVERLOADED = re.compile(r"overloaded", re.IGNORECASE)
PROVIDER_MESSAGE = re.compile(r'"message"\s*:\s*"((?:[^"\\]|\\.)*)"')
LITELLM_PREFIX = re.compile(r"^(?:litellm\.\w+:\s*)+")


def import_litellm() -> None:
    """Import litellm, the first time only: offline, with its bundled price map, and without its stdout banners."""
    if "litellm" in sys.modules:
        return
    for name, value in OFFLINE:
        os.environ.setdefault(name, value)
    import litellm  # noqa: TID251 - this module is litellm's one importer

    litellm.suppress_debug_info = True  # no "Give Feedback / Get Help" banners on stdout for every error


def knows(kind: str) -> bool:
    """Whether kind is a provider litellm can talk to."""
    import_litellm()
    import litellm  # noqa: TID251

    return kind in litellm.provider_list


def price(kind: str, model: str) -> tuple[float, float, float, float, float] | None:
    """USD per prompt, completion, cache-read, cache-write and one-hour cache-write token from litellm's bundled
    price map, or None when it has none; a cache price it does not list is the prompt's, a one-hour write price the
    write price."""
    import_litellm()
    import litellm  # noqa: TID251

    for key in (f"{kind}/{model}", model):
        entry = litellm.model_cost.get(key)
        if not isinstance(entry, dict) or (key == model and not _provider_matches(entry, kind)):
            continue
        per_in, per_out = entry.get("input_cost_per_token"), entry.get("output_cost_per_token")
        if isinstance(per_in, int | float) and isinstance(per_out, int | float):
            prompt = float(per_in)
            write = _cache_price(entry.get("cache_creation_input_token_cost"), prompt)
            return (prompt, float(per_out), _cache_price(entry.get("cache_read_input_token_cost"), prompt), write,
                    _cache_price(entry.get("cache_creation_input_token_cost_above_1hr"), write))
    return None


def _cache_price(value: Any, per_in: float) -> float:
    """A price-map cache price (a number, not a flag, not negative), else the prompt's."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0 else per_in


def _provider_matches(entry: Mapping[str, Any], kind: str) -> bool:
    """An unprefixed entry counts only for its own provider: `gpt-4o` is OpenAI's price, not Azure's."""
    provider = str(entry.get("litellm_provider", ""))
    return provider == kind or provider.startswith(kind + "-")


# -- errors: the one boundary where litellm's (and its HTTP client's) exceptions become ours --------------------


@contextmanager
def litellm_errors(upstream: str, streaming: bool = False) -> Iterator[None]:
    """Map what litellm raises to gateway.errors; mid-stream, every failure is a cut (unavailable or timeout)."""
    try:
        yield
    except UpstreamError:
        raise
    except Exception as exc:
        error = upstream_error(upstream, exc)
        if streaming and isinstance(error, UpstreamStatus):
            error = UpstreamCut(upstream, f"error after the stream started: {error.reason}")
        raise error from exc


def stream_errors(upstream: str) -> AbstractContextManager[None]:
    """litellm_errors for a stream being read: every failure a cut or a timeout."""
    return litellm_errors(upstream, streaming=True)


def upstream_error(upstream: str, exc: BaseException) -> UpstreamError:
    """The gateway error for one exception from litellm, its provider code or its HTTP client; the transport's
    own (a redirect, an answer over a limit) as it raised it, under whatever litellm wrapped it in."""
    from litellm import exceptions as llm_errors  # noqa: TID251

    cause = _transport_cause(exc)
    if isinstance(cause, UpstreamError):
        return cause
    if isinstance(exc, llm_errors.Timeout | TimeoutError) or isinstance(cause, httpx.TimeoutException | TimeoutError):
        return UpstreamTimeout(upstream)
    if isinstance(exc, llm_errors.APIConnectionError) or cause is not None:
        return UpstreamUnavailable(upstream, type(cause or exc).__name__)
    status = getattr(exc, "status_code", None)
    if not isinstance(status, int) or status < 400:
        return UpstreamUnavailable(upstream, type(exc).__name__)
    message = _provider_message(exc)
    kind: str | None = None
    if isinstance(exc, llm_errors.ContextWindowExceededError):
        status, kind = 400, "context_length"
    elif isinstance(exc, llm_errors.ContentPolicyViolationError):
        status, kind = 400, "content_filter"
    elif status >= 500 and OVERLOADED.search(message):
        status = 529
    body = {"error": {"message": message, "type": _error_type(status), "param": None,
                      "code": {"context_length": "context_length_exceeded"}.get(kind or "", kind)}}
    error = UpstreamStatus(upstream, status, orjson.dumps(body), JSON)
    error.retry_after = _retry_after(exc)
    error.kind = kind
    return error


def _transport_cause(exc: BaseException) -> BaseException | None:
    """The transport's error behind a litellm exception (ours, connect refused, read timeout...), if there is one."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return None
        if isinstance(seen, UpstreamError | httpx.TransportError | OSError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _provider_message(exc: BaseException) -> str:
    """The provider's own words, without litellm's class-name prefixes."""
    text = str(getattr(exc, "message", "") or exc)
    found = PROVIDER_MESSAGE.search(text)
    if found is not None:
        try:
            return str(orjson.loads(b'"' + found.group(1).encode() + b'"'))
        except orjson.JSONDecodeError:
            pass
    return LITELLM_PREFIX.sub("", text)[:1000]


def _error_type(status: int) -> str:
    return {401: "authentication_error", 403: "permission_error", 404: "not_found_error",
            429: "rate_limit_error"}.get(status, "invalid_request_error" if status < 500 else "server_error")


def _retry_after(exc: BaseException) -> str | None:
    for headers in (getattr(exc, "litellm_response_headers", None), getattr(exc, "headers", None),
                    getattr(getattr(exc, "response", None), "headers", None)):
        if isinstance(headers, Mapping | httpx.Headers):
            value = headers.get("retry-after")
            if value is not None:
                return str(value)
    return None


class Prepared(bytes):
    """The request as JSON, whose size the dispatcher's small-request rule reads, carrying litellm's arguments made
    from the same mapping: send hands litellm those, never a parse of these bytes."""

    params: dict[str, Any]

    @classmethod
    def of(cls, data: bytes, params: dict[str, Any]) -> Prepared:
        prepared = cls(data)
        prepared.params = params
        return prepared


# -- the client --------------------------------------------------------------------------------------------------


class LitellmUpstream:
    """Sends chat completions to one upstream of a kind litellm speaks, and answers in the OpenAI wire format.

    It holds its own HTTP client (a litellm AsyncHTTPHandler over a BoundedTransport), closed by aclose.
    """

    def __init__(self, name: str, spec: UpstreamSpec) -> None:
        import_litellm()
        from litellm.llms.custom_httpx.http_handler import AsyncHTTPHandler  # noqa: TID251

        self.name = name
        self.spec = spec
        self._model = f"{spec.kind}/{spec.model}"
        self._forward = FORWARDED_HEADERS | spec.forward_headers
        timeouts = spec.timeouts
        self._try_timeout = timeouts.per_try_s
        self._timeout = httpx.Timeout(timeouts.per_try_s, connect=timeouts.connect_s)
        self._stream_timeout = httpx.Timeout(timeouts.stream_idle_s, connect=timeouts.connect_s)
        pool = AsyncHTTPHandler.create_async_transport()  # litellm's own choice: aiohttp unless it is turned off
        self._transport = BoundedTransport(name, spec.limits, pool or httpx.AsyncHTTPTransport())
        self._http = AsyncHTTPHandler(timeout=self._timeout, transport=self._transport, follow_redirects=False)
        self._lifetimes = Lifetimes()
        self.closed = False

    def encode(self, body: Mapping[str, Any], stream: bool) -> Prepared:
        """The OpenAI request with this upstream's model, and stream usage asked for (the gateway bills it, and
        strips it again when the client did not ask); send translates it."""
        rewritten = {**body, "model": self.spec.model}
        if stream:
            options = body.get("stream_options")
            rewritten["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
        params = {key: value for key, value in rewritten.items() if key in CHAT_PARAMS}
        return Prepared.of(orjson.dumps(rewritten), params)

    async def send(self, path: str, body: bytes, client_headers: Mapping[str, str],
                   stream: bool) -> Answer | EventStream:
        """Translate and send a request, and wait for the answer to start; UpstreamError when that fails."""
        if path != "/chat/completions":
            message = f"upstream kind '{self.spec.kind}' serves only /v1/chat/completions"
            raise UpstreamStatus(self.name, 404, orjson.dumps(
                {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}}), JSON)
        prepared = body if isinstance(body, Prepared) else self.encode(orjson.loads(body), stream)
        params = dict(prepared.params)
        extra = {k: v for k, v in client_headers.items() if k in self._forward}
        if extra:
            params["extra_headers"] = extra
        call = self._open(params) if stream else self._answer(params)
        self._lifetimes.opened()
        try:
            with litellm_errors(self.name):
                return await self._within_try(call)
        finally:
            self._lifetimes.closed()

    async def _within_try(self, call: Coroutine[Any, Any, Answer | EventStream]) -> Answer | EventStream:
        """call's exchange within per_try_timeout_s (the whole answer, or a stream's first events).

        A call given up (its time passed, or its caller cancelled) is cancelled only once its request is on the
        network: before that, litellm may still be translating it in a thread, and a cancel there would drop the
        coroutine the thread returns, never awaited. Such a call goes on alone, and the transport refuses to send
        its request.
        """
        attempt = Attempt()
        context = contextvars.copy_context()
        context.run(ATTEMPT.set, attempt)
        task = asyncio.get_running_loop().create_task(call, context=context)
        try:
            done, _ = await asyncio.wait((task,), timeout=self._try_timeout)
        except asyncio.CancelledError:
            self._abandon(task, attempt)
            raise
        if not done:
            self._abandon(task, attempt)
            raise UpstreamTimeout(self.name)
        return task.result()

    def _abandon(self, task: asyncio.Task[Answer | EventStream], attempt: Attempt) -> None:
        attempt.abandoned = True
        if attempt.sending:
            task.cancel()
        self._lifetimes.keep(task, _discard)

    async def _answer(self, params: dict[str, Any]) -> Answer:
        return Answer(self.name, completion_body(await self._call(params, stream=False, timeout=self._timeout)))

    async def _call(self, params: dict[str, Any], **options: Any) -> Any:
        import litellm  # noqa: TID251
        from litellm._internal_context import internal_sub_call  # noqa: TID251

        with internal_sub_call():  # the gateway logs and bills; litellm's logging worker and callbacks stay idle
            return await litellm.acompletion(model=self._model, api_key=self.spec.key, api_base=self.spec.base_url,
                                             drop_params=True, max_retries=0, client=self._http, **options, **params)

    async def _open(self, params: dict[str, Any]) -> EventStream:
        """Start a stream: read the provider's events ourselves when we know them, else through litellm's wrapper."""
        stream = await self._call(params, stream=True, timeout=self._stream_timeout)
        source = await self._source(stream)
        # The provider iterator keeps litellm's httpx response; its body has not been read yet.
        response = getattr(source, "_response", None) or getattr(source, "response", None)
        frames = self._frames(source, include_usage=True)  # asked for in encode, whatever the client asked
        if frames is not None and isinstance(response, httpx.Response):
            events = translated(response, frames, self.spec.limits)
            return EventStream(self.name, events, response.aclose, self._lifetimes, stream_errors)
        first = await anext(stream, None)
        return EventStream(self.name, wrapped(first, stream), stream.aclose, self._lifetimes, stream_errors)

    async def _source(self, stream: Any) -> Any:
        """The provider-level iterator under litellm's wrapper; some providers only send the request now."""
        if getattr(stream, "completion_stream", None) is None and hasattr(stream, "fetch_stream"):
            try:
                await stream.fetch_stream()
            except Exception as exc:
                raise _mapped_by_litellm(exc, self._model, self.spec.kind) from exc
        return getattr(stream, "completion_stream", None)

    def _frames(self, source: Any, include_usage: bool) -> Frames | None:
        """A translator for the provider iterator's wire format, or None to let litellm's wrapper do it."""
        from litellm.constants import RESPONSE_FORMAT_TOOL_NAME  # noqa: TID251

        module = type(source).__module__
        if module == "litellm.llms.anthropic.chat.handler" and getattr(source, "response_format_schema", 1) is None:
            names = getattr(source, "tool_name_reverse_map", None) or {}
            json_tool = RESPONSE_FORMAT_TOOL_NAME if getattr(source, "json_mode", False) else None
            return AnthropicFrames(self.name, self.spec.model, include_usage, json_tool, names)
        if module == "litellm.llms.vertex_ai.gemini.vertex_and_google_ai_studio_gemini":
            return GeminiFrames(self.name, self.spec.model, include_usage, _encode_call_id)
        return None

    async def aclose(self) -> None:
        """Close the HTTP client once no stream of it is open and every call given up has ended (cancelled: now)."""
        try:
            await self._lifetimes.idle.wait()
        finally:
            await self._http.client.aclose()
            await self._transport.close_pool()
            self.closed = True


def _discard(task: asyncio.Task[Answer | EventStream]) -> None:
    """Take a given-up call's outcome, so it is not reported as never retrieved; close a stream it still opened."""
    if task.cancelled() or task.exception() is not None:
        return
    task.result().close()


def _mapped_by_litellm(exc: Exception, model: str, provider: str) -> BaseException:
    """A provider's raw error as litellm would have raised it from its own wrapper."""
    import litellm  # noqa: TID251

    try:
        mapped = litellm.exception_type(model=model, original_exception=exc, custom_llm_provider=provider)
    except Exception as raised:
        return raised
    return mapped if isinstance(mapped, BaseException) else exc


def _encode_call_id(call_id: str, signature: str | None) -> str:
    """Gemini's thought signature rides in the tool call id, as litellm does, so the next turn can send it back."""
    from litellm.litellm_core_utils.prompt_templates.factory import encode_tool_call_id_with_signature  # noqa: TID251

    return str(encode_tool_call_id_with_signature(call_id, signature))
