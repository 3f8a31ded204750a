"""The Responses API's follow-ups: which upstream holds each response, so `previous_response_id` finds it.

Each process remembers the responses it served; with Redis configured every replica also shares them there, so
a follow-up that lands on another replica still goes to the upstream that holds its previous response.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Protocol

import orjson

from gateway.errors import InvalidRequest
from gateway.routing.policy.decide import Decision
from gateway.sse import created_response
from gateway.state.base import StateError

REMEMBERED = 100_000  # response ids a process remembers, the oldest forgotten first
HELD_S = 30 * 86400  # how long an id is remembered: as long as OpenAI keeps a stored response
ID_CHARS = 256  # a longer id is not remembered (ids are the upstream's, but the shared store's keys stay small)
KEY_PREFIX = "sy:resp:"
logger = logging.getLogger("switchyard.responses")


class Shared(Protocol):
    """Keys every replica sees, with a time to live (gateway/state/redis.py); StateError when unreachable."""

    async def put(self, key: str, value: str, ttl_s: int) -> None: ...

    async def get(self, key: str) -> str | None: ...


class Holders:
    """Which upstream served each recent response id: in this process (bounded, the oldest go first) and, when a
    shared store is given, for every replica; an id is forgotten after ttl_s."""

    def __init__(self, shared: Shared | None = None, size: int = REMEMBERED, ttl_s: int = HELD_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.shared = shared
        self.size = size
        self.ttl_s = ttl_s
        self._clock = clock
        self._held: OrderedDict[str, tuple[str, float]] = OrderedDict()  # id -> (upstream, forgotten at)

    async def remember(self, response_id: str | None, upstream: str) -> None:
        """Note that upstream holds response_id; if the shared store is away, only this process knows it."""
        if not response_id or len(response_id) > ID_CHARS:
            return
        self._held[response_id] = (upstream, self._clock() + self.ttl_s)
        self._held.move_to_end(response_id)
        if len(self._held) > self.size:
            self._held.popitem(last=False)
        if self.shared is not None:
            try:
                await self.shared.put(KEY_PREFIX + response_id, upstream, self.ttl_s)
            except StateError as exc:
                logger.warning("could not share response %s's upstream: %s", response_id[:64], exc)

    async def holder(self, response_id: str) -> str | None:
        """The upstream that served response_id, if this process or the shared store remembers it."""
        held = self._held.get(response_id)
        if held is not None:
            if held[1] > self._clock():
                return held[0]
            del self._held[response_id]
        if self.shared is None or len(response_id) > ID_CHARS:
            return None
        try:
            return await self.shared.get(KEY_PREFIX + response_id)
        except StateError as exc:
            logger.warning("could not look up response %s's upstream: %s", response_id[:64], exc)
            return None

    async def pin(self, decision: Decision, body: dict[str, Any]) -> Decision:
        """decision narrowed to the upstream holding the response `previous_response_id` names; 400 when that
        upstream may not serve this request. An id not remembered (forgotten, or the shared store away) leaves the
        decision as it is: the upstream then says whether it knows it."""
        previous = body.get("previous_response_id")
        holder = await self.holder(previous) if isinstance(previous, str) else None
        if holder is None:
            return decision
        if holder not in decision.candidates:
            why = dict(decision.excluded).get(holder, f"not a candidate of route '{decision.route}'")
            raise InvalidRequest(f"previous_response_id '{previous}' is held by upstream '{holder}', which may not "
                                 f"serve this request ({why}); start a new conversation without it",
                                 param="previous_response_id", code="previous_response_unavailable")
        others = tuple((name, "previous_response") for name in decision.candidates if name != holder)
        return replace(decision, candidates=(holder,), excluded=decision.excluded + others)


def response_id(body: bytes) -> str | None:
    """The id of a whole Responses API answer."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    found = data.get("id") if isinstance(data, dict) else None
    return found if isinstance(found, str) else None


def streamed_response_id(first: bytes) -> str | None:
    """The id of a streamed answer, from its `response.created` event among the first events."""
    response = created_response(first)
    found = response.get("id") if response is not None else None
    return found if isinstance(found, str) else None
