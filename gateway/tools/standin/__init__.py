"""Stand-in upstreams for `switchyard demo` and the tests: real HTTP servers on loopback that answer, misbehave on
request, and remember what they saw.

- `StandIn` (app.py): an ASGI app speaking the OpenAI API; `Fault`s queue in `faults`, come in `x-standin-*`
  headers, or are POSTed to /standin/faults.
- `QueueingEngine` (engine.py): a self-hosted engine that really queues and shows it on /metrics.
- `FakeAnthropic`, `FakeGemini` (providers.py): the same for providers' own wire formats, taking the same `Fault`.
- `FaultServer` (faults.py): raw HTTP/1.1 following a script of behaviours (behaviours.py), for what an ASGI app
  cannot do: resets, silences, stalls, floods, redirects, echoed keys.
- events.py writes their server-sent events; hostile.py makes the payloads a hostile upstream sends.
"""

from gateway.tools.standin.app import Fault, Seen, StandIn
from gateway.tools.standin.behaviours import (
    Arrival,
    Behaviour,
    Echo,
    Flood,
    Hang,
    Json,
    Redirect,
    Reset,
    SilentClose,
    Sse,
    Status,
)
from gateway.tools.standin.engine import METRICS_FORMATS, QueueingEngine
from gateway.tools.standin.events import DONE, chat_events, chunk, event, named_event, usage
from gateway.tools.standin.faults import FaultServer
from gateway.tools.standin.providers import Fake, FakeAnthropic, FakeGemini

__all__ = [
    "DONE",
    "METRICS_FORMATS",
    "Arrival",
    "Behaviour",
    "Echo",
    "Fake",
    "FakeAnthropic",
    "FakeGemini",
    "Fault",
    "FaultServer",
    "Flood",
    "Hang",
    "Json",
    "QueueingEngine",
    "Redirect",
    "Reset",
    "Seen",
    "SilentClose",
    "Sse",
    "StandIn",
    "Status",
    "chat_events",
    "chunk",
    "event",
    "named_event",
    "usage",
]
