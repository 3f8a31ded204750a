"""The first stage: who is asking (authenticate), what they ask (parse) and what it holds (classify)."""

from __future__ import annotations

import itertools
import os
import re

from gateway.asgi import Receive, read_body
from gateway.errors import InvalidRequest
from gateway.pipeline.auth import authenticate, check_route
from gateway.pipeline.inbound import Call, Endpoint, Inbound
from gateway.pipeline.record import Record
from gateway.routing import classify
from gateway.routing.policy.decide import Features
from gateway.routing.policy.model import Policy
from gateway.values import value

REQUEST_ID = re.compile(r"(?!.*\.\.)[A-Za-z0-9._-]{1,128}")  # no "/", no "..": ids reach files and upstreams


@value
class Taken:
    """A request taken in: as its inbound read it, and what classification found in it."""

    call: Call
    features: Features


async def take_in(inbound: Inbound, endpoint: Endpoint, policy: Policy, headers: dict[str, str], receive: Receive,
                  max_body_bytes: int, record: Record) -> Taken:
    """Authenticate, read and parse the body, check the route and classify; the record notes what each found."""
    record.tenant = authenticate(policy, inbound.credential(headers), inbound.credential_hint)
    call = inbound.parse(endpoint, await read_body(receive, headers, max_body_bytes), headers)
    record.route = check_route(policy, record.tenant, call.body)
    if classify.fits_on_loop(headers):  # most bodies: no coroutine to await
        features = classify.features(policy, record.tenant, endpoint.name, call.body, headers)
    else:
        features = await classify.features_of(policy, record.tenant, endpoint.name, call.body, headers)
    record.data_class = features.data_class or "-"
    record.prompt_tokens, record.n = features.prompt_tokens, features.n
    if features.stream and not endpoint.streamable:
        raise InvalidRequest(f"'stream' is not supported on {endpoint.upstream_path}", param="stream")
    return Taken(call, features)


class RequestIds:
    """Request ids for one process: a random prefix and a count, unique across replicas without a syscall each."""

    def __init__(self) -> None:
        self._prefix = os.urandom(6).hex()
        self._count = itertools.count()

    def for_request(self, offered: str) -> str:
        """The client's own request id when it is safe to pass on and log, else the next of ours."""
        if is_safe_id(offered):
            return offered
        return f"{self._prefix}{next(self._count) & 0xFFFFFFFFFFFF:012x}"


def request_id_for(offered: str) -> str:
    """The client's own request id when it is safe to pass on and log, else a random one."""
    return offered if is_safe_id(offered) else os.urandom(12).hex()


def is_safe_id(offered: str) -> bool:
    """Whether a client's request id may be passed on and logged: no path separators, nothing odd, not empty."""
    return bool(offered) and REQUEST_ID.fullmatch(offered) is not None
