"""vLLM killed mid-stream (SIGKILL to its process group): what the clients of two streams in flight then see.

Killing the generate server ends it for the session, so these tests run last (see conftest); a third vLLM to
kill instead would need another 2.4 GB and a minute of start-up. The streams run when the kill comes:
- one on a route that cannot continue gets an error event and no [DONE];
- one on a route whose fallback declares `continuation` is finished by that fallback, as one completion.
"""

from __future__ import annotations

import signal
import threading
from dataclasses import dataclass, field
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionChunk

from tests.conftest import KEY
from tests.real.conftest import MAX_LOGPROBS, Vllm, Wide
from tests.real.servers import Process
from tests.real.wire import error_body, error_of, metric, parse_sse, poll

pytestmark = pytest.mark.real

# Many logprobs a token make megabytes of events, which vLLM's HTTP server takes seconds to write, so both streams
# are far from their ends when their first bytes come (the tiny model itself is done in about a second).
LONG: dict[str, Any] = {"messages": [{"role": "user", "content": "Tell me a story."}], "max_tokens": 480,
                        "temperature": 1.0, "logprobs": True, "top_logprobs": MAX_LOGPROBS,
                        "extra_body": {"ignore_eos": True}, "stream_options": {"include_usage": True}}


@dataclass
class Cut:
    """One stream that was running when vLLM died."""

    route: str
    body: dict[str, Any]
    status: int = 0
    payloads: list[dict[str, Any]] = field(default_factory=list)
    done: bool = False
    started: threading.Event = field(default_factory=threading.Event)
    failure: BaseException | None = None

    def run(self, client: openai.OpenAI, killed: threading.Event) -> None:
        """Read the first bytes, then nothing more until vLLM is killed, so it cannot finish first."""
        try:
            with client.chat.completions.with_streaming_response.create(model=self.route, stream=True,
                                                                        **self.body) as response:
                self.status = response.status_code
                raw = b""
                for chunk in response.iter_bytes():
                    raw += chunk
                    self.started.set()
                    killed.wait(60)
                self.payloads, self.done = parse_sse(raw)
        except BaseException as exc:
            self.failure = exc
        finally:
            self.started.set()


@dataclass
class Death:
    """The two cut streams, and the gateway that served them."""

    plain: Cut
    continued: Cut
    gateway: Process
    fallback_asked: list[dict[str, Any]]  # what the stand-in was asked meanwhile


@pytest.fixture(scope="module")
def doomed_vllm(vllm: Vllm, gateway: Process, standin: Wide) -> Death:
    """Send both streams while vLLM's engine is held, let it go, kill vLLM's whole process group once each
    stream has its first bytes.

    Held, the engine starts both requests in one step, so their first bytes come together: started one after
    the other, the first stream ran on for as long as the second took to start (a cold CPU engine has taken
    tens of seconds), time enough for vLLM to write all of its 3.3 MB into the sockets' buffers and finish.
    The clients read nothing past their first bytes until the kill, so the gateway reads no further from vLLM
    either, and what vLLM can write meanwhile is bounded by those buffers.
    """
    plain, continued = Cut("chat-open", {**LONG, "n": 2}), Cut("chat-continue", LONG)  # continuation needs n: 1
    asked, killed = len(standin.app.seen), threading.Event()
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key=KEY, max_retries=0, timeout=120) as client:
        threads = [threading.Thread(target=cut.run, args=(client, killed)) for cut in (continued, plain)]
        with vllm.generate.engine_held():
            for thread in threads:
                thread.start()
            poll(lambda: all(metric(gateway.url, "switchyard_inflight_requests", upstream=name) == 1
                             for name in ("vllm-cont", "vllm-open")), 30, "the gateway to send both streams to vLLM")
        for cut in (continued, plain):
            assert cut.started.wait(100), f"no bytes on {cut.route}"
        vllm.generate.signal(signal.SIGKILL)
        killed.set()
        for thread in threads:
            thread.join(120)
    for cut in (plain, continued):
        assert cut.failure is None, f"{cut.route}: {cut.failure!r}"
    return Death(plain, continued, gateway, [seen.body for seen in standin.app.seen[asked:]])


def test_a_stream_that_cannot_continue_ends_with_an_error_event(doomed_vllm: Death) -> None:
    cut = doomed_vllm.plain
    assert cut.status == 200
    assert not cut.done  # never ended as if complete
    assert set(cut.payloads[-1]) == {"error"}
    assert cut.payloads[-1]["error"]["code"] == "stream_interrupted"
    for payload in cut.payloads[:-1]:
        ChatCompletionChunk.model_validate(payload)
    assert not any(c.get("finish_reason") for p in cut.payloads[:-1] for c in p["choices"]), "vLLM finished first"


def test_a_continued_stream_finishes(doomed_vllm: Death) -> None:
    """The fallback was asked to continue the text vLLM had sent, and the client's stream ends complete."""
    asked = doomed_vllm.fallback_asked
    finished = any(c.get("finish_reason") for p in doomed_vllm.continued.payloads for c in p.get("choices", ()))
    assert len(asked) == 1, ("vLLM finished before the kill" if finished and doomed_vllm.continued.done
                             else "the gateway did not ask the fallback to continue")
    assert asked[0]["continue_final_message"] is True
    assert asked[0]["messages"][-1]["role"] == "assistant"
    cut = doomed_vllm.continued
    assert cut.status == 200
    assert cut.done
    assert not [p for p in cut.payloads if "error" in p]
    assert any(c.get("finish_reason") for p in cut.payloads for c in p["choices"])


# Needs the stream-ids fix of issue 14 (point 2): the fallback's part has its own id and created, and the summed
# usage event the gateway writes has neither, so ChatCompletionChunk.model_validate refuses it.
def test_a_continued_stream_reads_as_one_completion(doomed_vllm: Death) -> None:
    payloads = doomed_vllm.continued.payloads
    for payload in payloads:
        ChatCompletionChunk.model_validate(payload)
    assert len({(p["id"], p["created"], p["model"]) for p in payloads}) == 1
    usage = [p["usage"] for p in payloads if p.get("usage")]
    assert len(usage) == 1
    assert usage[0]["completion_tokens"] > 0


def test_a_dead_upstream_is_an_openai_error(doomed_vllm: Death) -> None:
    """After the death, a request whose only candidate is vLLM gets a 502 in OpenAI's shape, naming no address."""
    with openai.OpenAI(base_url=doomed_vllm.gateway.url + "/v1", api_key=KEY, max_retries=0) as client:
        exc = error_of(client.chat.completions.create, model="chat", max_tokens=4,
                       messages=[{"role": "user", "content": "hi"}])
    assert exc.status_code == 502
    error = error_body(exc)
    assert error["code"] == "upstream_error"
    assert error["type"] == "server_error"
    assert "127.0.0.1" not in error["message"]
