"""Upstreams whose wire format is not OpenAI's (Anthropic, Gemini, Bedrock, Vertex AI...), through litellm.

The only importer of litellm, and the one place its exceptions are met. litellm translates each request, sends it
and maps the provider's errors. Its per-chunk stream wrapper costs about half a millisecond of CPU a frame, so the
event streams of Anthropic and Gemini are read off litellm's response and translated here (`AnthropicFrames`,
`GeminiFrames`); any other provider's stream goes through litellm's wrapper, slower but complete.

It is imported only when a policy names a kind other than `openai`; importing it reaches no network.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

# Before litellm is imported: use the price map bundled with it (no download at import) and stay offline
# (no fetching of its blog posts, beta-header lists or tokenizers). The SDK itself sends no telemetry.
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
os.environ["LITELLM_OFFLINE_MODE"] = "true"

import httpx
import litellm  # noqa: TID251 - this module is litellm's one importer
import orjson
from litellm import exceptions as llm_errors  # noqa: TID251
from litellm._internal_context import internal_sub_call  # noqa: TID251
from litellm.constants import RESPONSE_FORMAT_TOOL_NAME  # noqa: TID251

from gateway.delivery import sse
from gateway.errors import UpstreamCut, UpstreamError, UpstreamStatus, UpstreamTimeout, UpstreamUnavailable
from gateway.routing.policy.schema import Resilience, Upstream

litellm.suppress_debug_info = True  # no "Give Feedback / Get Help" banners on stdout for every error

JSON = b"application/json"
EVENT_STREAM = b"text/event-stream"
DONE = sse.DONE_EVENT
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


def knows(kind: str) -> bool:
    """Whether kind is a provider litellm can talk to."""
    return kind in litellm.provider_list


def price(kind: str, model: str) -> tuple[float, float] | None:
    """USD per prompt and per completion token from litellm's bundled price map, or None when it has none."""
    for key in (f"{kind}/{model}", model):
        entry = litellm.model_cost.get(key)
        if not isinstance(entry, dict) or (key == model and not _provider_matches(entry, kind)):
            continue
        per_in, per_out = entry.get("input_cost_per_token"), entry.get("output_cost_per_token")
        if isinstance(per_in, int | float) and isinstance(per_out, int | float):
            return float(per_in), float(per_out)
    return None


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


def upstream_error(upstream: str, exc: BaseException) -> UpstreamError:
    """The gateway error for one exception from litellm, its provider code or its HTTP client."""
    cause = _transport_cause(exc)
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
    """The HTTP client's error behind a litellm exception (connect refused, read timeout...), if there is one."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return None
        if isinstance(seen, httpx.TransportError | OSError):
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


# -- exchanges -----------------------------------------------------------------------------------------------


class Answer:
    """A whole chat.completion, already translated."""

    __slots__ = ("_body", "content_type", "status", "upstream")

    def __init__(self, upstream: str, body: bytes) -> None:
        self.upstream = upstream
        self.status = 200
        self.content_type = JSON
        self._body = body


    async def read(self) -> bytes:
        return self._body

    async def chunks(self) -> AsyncIterator[bytes]:
        yield self._body

    def retry_after(self) -> str | None:
        return None

    def close(self) -> None:
        """Nothing to release: litellm read the body whole."""


class EventStream:
    """A stream translated to OpenAI server-sent events as it arrives."""

    __slots__ = ("_aclose", "_frames", "_open", "content_type", "status", "upstream")

    def __init__(self, upstream: str, frames: AsyncIterator[bytes], aclose: Callable[[], Awaitable[Any]]) -> None:
        self.upstream = upstream
        self.status = 200
        self.content_type = EVENT_STREAM
        self._frames = frames
        self._aclose = aclose
        self._open = True


    async def read(self) -> bytes:
        return b"".join([frame async for frame in self.chunks()])

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            with litellm_errors(self.upstream, streaming=True):
                async for frame in self._frames:
                    yield frame
        finally:
            if self._open:
                self._open = False
                await _quietly(self._aclose)

    def retry_after(self) -> str | None:
        return None

    def close(self) -> None:
        """Close the upstream response unless the stream ran to its end, so the provider sees us go."""
        if self._open:
            self._open = False
            task = asyncio.get_running_loop().create_task(_quietly(self._aclose))
            _closing.add(task)  # the loop holds tasks weakly; this close takes one turn of it
            task.add_done_callback(_closing.discard)


_closing: set[asyncio.Task[None]] = set()


async def _quietly(aclose: Callable[[], Awaitable[Any]]) -> None:
    try:
        await aclose()
    except Exception:  # the connection is being dropped anyway
        return


# -- stream translation --------------------------------------------------------------------------------------


class Frames:
    """Writes OpenAI chat.completion.chunk events; the provider-specific subclasses read the provider's events."""

    def __init__(self, upstream: str, model: str, include_usage: bool) -> None:
        self.upstream = upstream
        self.model = model
        self.include_usage = include_usage
        self.finished = False
        self._head = b""

    def start(self, response_id: str, model: str) -> bytes:
        """The opening event, with the assistant's role."""
        self._head = (b'{"id":' + orjson.dumps(response_id) + b',"object":"chat.completion.chunk","created":'
                      + str(int(time.time())).encode() + b',"model":' + orjson.dumps(model or self.model)
                      + b',"choices":[{"index":0,"delta":')
        return self.delta({"role": "assistant", "content": ""})

    def delta(self, delta: Mapping[str, Any]) -> bytes:
        return sse.data_event(self._head + orjson.dumps(delta) + b',"finish_reason":null}]}')

    def finish(self, reason: str) -> bytes:
        self.finished = True
        return sse.data_event(self._head + b'{},"finish_reason":' + orjson.dumps(reason) + b"}]}")

    def ending(self, prompt: int, completion: int, cached: int = 0) -> bytes:
        """The usage event (when asked for) and [DONE]."""
        if not self.include_usage:
            return DONE
        usage: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion,
                                 "total_tokens": prompt + completion}
        if cached:
            usage["prompt_tokens_details"] = {"cached_tokens": cached}
        head = self._head.rsplit(b',"choices":', 1)[0]
        return sse.data_event(head + b',"choices":[],"usage":' + orjson.dumps(usage) + b"}") + DONE

    def event(self, data: dict[str, Any]) -> bytes:
        raise NotImplementedError

    def end(self) -> bytes:
        """What to send once the provider's body ended; nothing when it ended before finishing."""
        return b""


ANTHROPIC_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls",
                    "pause_turn": "stop", "refusal": "content_filter", "model_context_window_exceeded": "length"}


class AnthropicFrames(Frames):
    """Anthropic Messages events (message_start, content_block_*, message_delta, message_stop) to OpenAI chunks."""

    def __init__(self, upstream: str, model: str, include_usage: bool, json_tool: str | None,
                 names: Mapping[str, str]) -> None:
        super().__init__(upstream, model, include_usage)
        self._json_tool = json_tool  # litellm answers response_format through a tool on older models
        self._names = names
        self._tools: dict[int, int] = {}  # content block index -> tool call index
        self._json_blocks: set[int] = set()
        self._usage = {"input_tokens": 0, "output_tokens": 0, "cache_read_input_tokens": 0,
                       "cache_creation_input_tokens": 0}
        self._reason = "stop"

    def event(self, data: dict[str, Any]) -> bytes:
        kind = data.get("type")
        if kind == "content_block_delta":
            return self._block_delta(data.get("index", 0), data.get("delta") or {})
        if kind == "content_block_start":
            return self._block_start(data.get("index", 0), data.get("content_block") or {})
        if kind == "message_start":
            message = data.get("message") or {}
            self._count(message.get("usage"))
            return self.start(str(message.get("id") or "msg"), str(message.get("model") or ""))
        if kind == "message_delta":
            self._count(data.get("usage"))
            stop = (data.get("delta") or {}).get("stop_reason")
            self._reason = ANTHROPIC_FINISH.get(stop, "stop") if stop else self._reason
            if self._reason == "tool_calls" and self._json_blocks and not self._tools:
                self._reason = "stop"
            return b""
        if kind == "message_stop":
            usage = self._usage
            cached = usage["cache_read_input_tokens"]
            prompt = usage["input_tokens"] + cached + usage["cache_creation_input_tokens"]
            return self.finish(self._reason) + self.ending(prompt, usage["output_tokens"], cached)
        if kind == "error":
            error = data.get("error") or {}
            raise UpstreamCut(self.upstream, f"stream error: {error.get('type', 'error')}")
        return b""  # ping, content_block_stop, and event types added later

    def _block_start(self, index: int, block: Mapping[str, Any]) -> bytes:
        if block.get("type") != "tool_use":
            return b""
        if self._json_tool is not None and block.get("name") == self._json_tool:
            self._json_blocks.add(index)
            return b""
        self._tools[index] = position = len(self._tools)
        name = str(block.get("name", ""))
        call = {"index": position, "id": block.get("id"), "type": "function",
                "function": {"name": self._names.get(name, name), "arguments": ""}}
        return self.delta({"tool_calls": [call]})

    def _block_delta(self, index: int, delta: Mapping[str, Any]) -> bytes:
        kind = delta.get("type")
        if kind == "text_delta":
            return self.delta({"content": delta.get("text", "")})
        if kind == "input_json_delta":
            partial = delta.get("partial_json", "")
            if index in self._json_blocks:
                return self.delta({"content": partial}) if partial else b""
            if index in self._tools and partial:
                return self.delta({"tool_calls": [{"index": self._tools[index], "function": {"arguments": partial}}]})
            return b""
        if kind == "thinking_delta":
            return self.delta({"reasoning_content": delta.get("thinking", "")})
        return b""  # signature_delta, citations_delta

    def _count(self, usage: Any) -> None:
        if isinstance(usage, dict):
            for key in self._usage:
                if isinstance(usage.get(key), int):
                    self._usage[key] = usage[key]


GEMINI_FILTERED = frozenset({"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY"})


class GeminiFrames(Frames):
    """Gemini streamGenerateContent (alt=sse) responses to OpenAI chunks; the body's end is the stream's end."""

    def __init__(self, upstream: str, model: str, include_usage: bool,
                 encode_call_id: Callable[[str, str | None], str]) -> None:
        super().__init__(upstream, model, include_usage)
        self._encode_call_id = encode_call_id
        self._started = False
        self._calls = 0
        self._usage: dict[str, Any] = {}

    def event(self, data: dict[str, Any]) -> bytes:
        out = b""
        if not self._started:
            self._started = True
            out = self.start(str(data.get("responseId") or "gemini"), str(data.get("modelVersion") or ""))
        if isinstance(data.get("usageMetadata"), dict):
            self._usage = data["usageMetadata"]
        candidates = data.get("candidates") or []
        candidate = candidates[0] if candidates and isinstance(candidates[0], dict) else {}
        for part in (candidate.get("content") or {}).get("parts") or ():
            out += self._part(part)
        reason = candidate.get("finishReason") or (data.get("promptFeedback") or {}).get("blockReason")
        if reason and not self.finished:
            out += self.finish(self._finish_reason(str(reason)))
        return out

    def _part(self, part: Mapping[str, Any]) -> bytes:
        if "text" in part:
            text = part["text"]
            return self.delta({"reasoning_content": text} if part.get("thought") else {"content": text})
        call = part.get("functionCall")
        if not isinstance(call, dict):
            return b""
        call_id = self._encode_call_id(f"call_{os.urandom(12).hex()}", part.get("thoughtSignature"))
        arguments = orjson.dumps(call.get("args") or {}).decode()
        self._calls += 1
        return self.delta({"tool_calls": [{"index": self._calls - 1, "id": call_id, "type": "function",
                                           "function": {"name": call.get("name", ""), "arguments": arguments}}]})

    def _finish_reason(self, reason: str) -> str:
        if reason in GEMINI_FILTERED:
            return "content_filter"
        if reason == "MAX_TOKENS":
            return "length"
        return "tool_calls" if self._calls else "stop"

    def end(self) -> bytes:
        if not self.finished:
            return b""
        usage = self._usage
        completion = int(usage.get("candidatesTokenCount", 0)) + int(usage.get("thoughtsTokenCount", 0))
        return self.ending(int(usage.get("promptTokenCount", 0)), completion,
                           int(usage.get("cachedContentTokenCount", 0)))


async def translated(response: httpx.Response, frames: Frames) -> AsyncIterator[bytes]:
    """Parse the provider's events, and yield the OpenAI events they make, one batch per read."""
    decoder = sse.Decoder()
    event = frames.event
    async for chunk in response.aiter_bytes():
        out = b"".join([event(orjson.loads(found.data)) for found in decoder.feed(chunk)])
        if out:
            yield out
    out = b"".join([event(orjson.loads(found.data)) for found in decoder.end()])
    if out:
        yield out
    tail = frames.end()
    if tail:
        yield tail


async def wrapped(first: Any, stream: Any) -> AsyncIterator[bytes]:
    """litellm's own stream wrapper (any provider): each ModelResponseStream as one event, then [DONE]."""
    chunk = first
    while chunk is not None:
        yield sse.data_event(orjson.dumps(chunk.model_dump(exclude_none=True)))
        chunk = await anext(stream, None)
    yield DONE


# -- the client --------------------------------------------------------------------------------------------------


class LitellmUpstream:
    """Sends chat completions to one upstream of a kind litellm speaks, and answers in the OpenAI wire format."""

    def __init__(self, name: str, spec: Upstream, resilience: Resilience) -> None:
        self.name = name
        self.spec = spec
        self._model = f"{spec.kind}/{spec.model}"
        self._key = spec.api_key.get_secret_value() if spec.api_key is not None else None
        self._forward = FORWARDED_HEADERS | spec.forward_headers
        self._try_timeout = resilience.per_try_timeout_s
        self._timeout = httpx.Timeout(resilience.per_try_timeout_s, connect=resilience.connect_timeout_s)
        self._stream_timeout = httpx.Timeout(resilience.stream_idle_timeout_s, connect=resilience.connect_timeout_s)

    def encode(self, body: Mapping[str, Any], stream: bool) -> bytes:
        """The OpenAI request with this upstream's model, and stream usage asked for; send translates it."""
        rewritten = {**body, "model": self.spec.model}
        if stream:
            options = body.get("stream_options")
            rewritten["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
        return orjson.dumps(rewritten)

    async def send(self, path: str, body: bytes, client_headers: Mapping[str, str],
                   stream: bool) -> Answer | EventStream:
        """Translate and send a request, and wait for the answer to start; UpstreamError when that fails."""
        if path != "/chat/completions":
            message = f"upstream kind '{self.spec.kind}' serves only /v1/chat/completions"
            raise UpstreamStatus(self.name, 404, orjson.dumps(
                {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}}), JSON)
        request = orjson.loads(body)
        params = {key: value for key, value in request.items() if key in CHAT_PARAMS}
        extra = {k: v for k, v in client_headers.items() if k in self._forward}
        if extra:
            params["extra_headers"] = extra
        with litellm_errors(self.name):
            async with asyncio.timeout(self._try_timeout):  # the whole answer, or a stream's first events
                if not stream:
                    return Answer(self.name, completion_body(await self._call(params, stream=False,
                                                                              timeout=self._timeout)))
                include_usage = bool((request.get("stream_options") or {}).get("include_usage"))
                return await self._open(params, include_usage)

    async def _call(self, params: dict[str, Any], **options: Any) -> Any:
        with internal_sub_call():  # the gateway logs and bills; litellm's logging worker and callbacks stay idle
            return await litellm.acompletion(model=self._model, api_key=self._key, api_base=self.spec.base_url,
                                             drop_params=True, max_retries=0, **options, **params)

    async def _open(self, params: dict[str, Any], include_usage: bool) -> EventStream:
        """Start a stream: read the provider's events ourselves when we know them, else through litellm's wrapper."""
        stream = await self._call(params, stream=True, timeout=self._stream_timeout)
        source = await self._source(stream)
        # The provider iterator keeps litellm's httpx response; its body has not been read yet.
        response = getattr(source, "_response", None) or getattr(source, "response", None)
        frames = self._frames(source, include_usage)
        if frames is not None and isinstance(response, httpx.Response):
            return EventStream(self.name, translated(response, frames), response.aclose)
        first = await anext(stream, None)
        return EventStream(self.name, wrapped(first, stream), stream.aclose)

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
        module = type(source).__module__
        if module == "litellm.llms.anthropic.chat.handler" and getattr(source, "response_format_schema", 1) is None:
            names = getattr(source, "tool_name_reverse_map", None) or {}
            json_tool = RESPONSE_FORMAT_TOOL_NAME if getattr(source, "json_mode", False) else None
            return AnthropicFrames(self.name, self.spec.model, include_usage, json_tool, names)
        if module == "litellm.llms.vertex_ai.gemini.vertex_and_google_ai_studio_gemini":
            return GeminiFrames(self.name, self.spec.model, include_usage, _encode_call_id)
        return None


def _mapped_by_litellm(exc: Exception, model: str, provider: str) -> BaseException:
    """A provider's raw error as litellm would have raised it from its own wrapper."""
    try:
        mapped = litellm.exception_type(model=model, original_exception=exc, custom_llm_provider=provider)
    except Exception as raised:
        return raised
    return mapped if isinstance(mapped, BaseException) else exc


def _encode_call_id(call_id: str, signature: str | None) -> str:
    """Gemini's thought signature rides in the tool call id, as litellm does, so the next turn can send it back."""
    from litellm.litellm_core_utils.prompt_templates.factory import encode_tool_call_id_with_signature  # noqa: TID251

    return str(encode_tool_call_id_with_signature(call_id, signature))


def completion_body(response: Any) -> bytes:
    """litellm's ModelResponse as OpenAI's chat.completion JSON, without litellm's extra fields."""
    data = response.model_dump()
    choices = []
    for choice in data.get("choices") or ():
        message = choice.get("message") or {}
        out: dict[str, Any] = {"role": message.get("role") or "assistant", "content": message.get("content"),
                               "refusal": None}
        if message.get("tool_calls"):
            out["tool_calls"] = [{"id": call.get("id"), "type": "function",
                                  "function": {"name": call["function"].get("name"),
                                               "arguments": call["function"].get("arguments") or ""}}
                                 for call in message["tool_calls"]]
        if message.get("reasoning_content"):
            out["reasoning_content"] = message["reasoning_content"]
        choices.append({"index": choice.get("index", 0), "message": out, "finish_reason": choice.get("finish_reason"),
                        "logprobs": choice.get("logprobs")})
    body = {"id": data.get("id"), "object": "chat.completion", "created": data.get("created") or int(time.time()),
            "model": data.get("model"), "choices": choices}
    usage = data.get("usage")
    if isinstance(usage, dict):
        body["usage"] = {key: usage.get(key) or 0 for key in ("prompt_tokens", "completion_tokens", "total_tokens")}
        cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
        if cached:
            body["usage"]["prompt_tokens_details"] = {"cached_tokens": cached}
    return orjson.dumps(body)
