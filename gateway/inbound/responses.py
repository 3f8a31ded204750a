"""The Responses API's follow-ups: which upstream holds each response, so `previous_response_id` finds it."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import replace
from typing import Any

import orjson

from gateway.errors import InvalidRequest
from gateway.inbound.responses_events import created_response
from gateway.routing.policy.decide import Decision

REMEMBERED = 100_000  # response ids a process remembers, the oldest forgotten first


class Holders:
    """Which upstream served each recent response id, in this process (bounded; the oldest go first)."""

    def __init__(self, size: int = REMEMBERED) -> None:
        self.size = size
        self._held: OrderedDict[str, str] = OrderedDict()

    def remember(self, response_id: str | None, upstream: str) -> None:
        """Note that upstream holds response_id."""
        if not response_id:
            return
        self._held[response_id] = upstream
        self._held.move_to_end(response_id)
        if len(self._held) > self.size:
            self._held.popitem(last=False)

    def holder(self, response_id: str) -> str | None:
        """The upstream that served response_id, if this process remembers it."""
        return self._held.get(response_id)

    def pin(self, decision: Decision, body: dict[str, Any]) -> Decision:
        """decision narrowed to the upstream holding the response `previous_response_id` names; 400 when that
        upstream may not serve this request. An id not remembered (another process's, or before a restart) leaves
        the decision as it is: the upstream then says whether it knows it."""
        previous = body.get("previous_response_id")
        holder = self.holder(previous) if isinstance(previous, str) else None
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
