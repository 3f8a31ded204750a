"""Messages requests served by a chat completions client: the request translated on the way out, answers back.

Wraps any chat client (an OpenAI-compatible upstream, or litellm's adapter for other providers), so the fallback
loop can try a translated candidate after one that speaks the Messages API itself, and the rest of the pipeline
only ever sees the Messages API's wire format.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import orjson

from gateway.errors import UpstreamCut, UpstreamError, UpstreamIncomplete, UpstreamMalformed
from gateway.inbound.messages.answer import to_message
from gateway.inbound.messages.events import ChatError, EventTranslator
from gateway.inbound.messages.request import to_chat
from gateway.upstreams.base import Client, Exchange

CHAT_PATH = "/chat/completions"
JSON = b"application/json"
EVENT_STREAM = b"text/event-stream; charset=utf-8"
Dropped = Callable[[str, set[str]], None]  # told the upstream and the fields a translation dropped


class TranslatedExchange:
    """A chat completions answer in progress, read as a Messages API answer."""

    def __init__(self, inner: Exchange, stream: bool) -> None:
        self.inner = inner
        self.upstream = inner.upstream
        self.status = inner.status
        self.content_type = EVENT_STREAM if stream else JSON

    async def read(self) -> bytes:
        """The whole Messages answer."""
        body = await self.inner.read()
        try:
            completion = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise UpstreamMalformed(self.upstream, "the answer is not JSON") from None
        if not isinstance(completion, dict):
            raise UpstreamMalformed(self.upstream, "the answer is not a JSON object")
        return orjson.dumps(to_message(completion))

    async def chunks(self) -> AsyncIterator[bytes]:
        """The Messages events, as the chat events they come from arrive; a stream that ends unfinished fails."""
        translator = EventTranslator()
        try:
            async for piece in self.inner.chunks():
                out = translator.feed(piece)
                if out:
                    yield out
                if translator.done:
                    break
        except ChatError as exc:
            raise UpstreamCut(self.upstream, f"error event: {exc}") from None
        except UpstreamError:
            if not translator.finished:
                raise
        if not translator.finished:
            raise UpstreamIncomplete(self.upstream, "ended without finishing")
        yield translator.end()

    def retry_after(self) -> str | None:
        return self.inner.retry_after()

    def close(self) -> None:
        self.inner.close()


class TranslatedUpstream:
    """Serves Messages requests through one chat completions client."""

    def __init__(self, inner: Client, dropped: Dropped) -> None:
        self.inner = inner
        self.name = inner.name
        self.spec = inner.spec
        self._dropped = dropped
        # self-hosted servers take top_k; OpenAI's own API refuses it, and litellm's adapter does not pass it on
        self._top_k = inner.spec.kind == "openai" and inner.spec.hosting == "self"
        redact = getattr(inner, "redact", None)
        if redact is not None:
            self.redact = redact  # the inner client's exchanges redact themselves

    def encode(self, body: Mapping[str, Any], stream: bool) -> bytes:
        """The chat completions body for this upstream; InvalidRequest for what cannot be translated."""
        translated = to_chat(body, top_k=self._top_k)
        if translated.dropped:
            self._dropped(self.name, translated.dropped)
        return self.inner.encode(translated.body, stream)

    async def aclose(self) -> None:
        """Nothing of its own to close: the inner client belongs to the runtime, which closes it."""

    async def send(self, path: str, body: bytes, client_headers: Mapping[str, str], stream: bool) -> Exchange:
        """Send the translated request to the chat endpoint, and read its answer as Messages."""
        return TranslatedExchange(await self.inner.send(CHAT_PATH, body, client_headers, stream), stream)
