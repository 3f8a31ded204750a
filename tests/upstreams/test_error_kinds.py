"""The one table of what an upstream's error means: structured fields first, wording on a bounded prefix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.upstreams.error_kinds import PREFIX_BYTES, kind_of

LLAMACPP = Path(__file__).resolve().parents[1] / "fixtures" / "llamacpp"  # scripts/real/record_llamacpp.py

VLLM_MAX_TOKENS = {"error": {"message": "max_tokens=600 cannot be greater than max_model_len=512. Please request "
                             "fewer output tokens.", "type": "BadRequestError", "param": "max_tokens", "code": 400}}
LLAMA_CONTEXT = {"error": {"code": 400, "message": "request (700 tokens) exceeds the available context size (512 "
                           "tokens), try increasing it", "type": "exceed_context_size_error", "n_prompt_tokens": 700,
                           "n_ctx": 512}}
LLAMA_TOO_LARGE = {"error": {"code": 500, "message": "input (700 tokens) is too large to process. increase the "
                             "physical batch size (current batch size: 512)", "type": "server_error"}}


@pytest.mark.parametrize(("status", "body", "kind"), [
    pytest.param(400, VLLM_MAX_TOKENS, "context_length", id="vllm-param-max-tokens"),
    pytest.param(400, {**LLAMA_CONTEXT, "error": {**LLAMA_CONTEXT["error"], "message": "no words to go by"}},
                 "context_length", id="llama.cpp-type-alone"),
    pytest.param(500, LLAMA_TOO_LARGE, "context_length", id="llama.cpp-500"),
    pytest.param(400, {"error": {"message": "x", "code": "context_length_exceeded"}}, "context_length", id="code"),
    pytest.param(400, {"error": "the input length exceeds the context length"}, "context_length", id="ollama"),
    pytest.param(400, {"error": {"message": "y", "code": "content_filter"}}, "content_filter", id="content-filter"),
    pytest.param(400, {"error": {"message": "max_tokens must be at least 1, got 0.", "param": "max_tokens"}}, None,
                 id="max-tokens-not-about-the-window"),
    pytest.param(500, {"error": {"message": "blocked by the safety system", "code": "content_filter"}}, None,
                 id="a-5xx-is-never-a-refusal"),
    pytest.param(503, LLAMA_TOO_LARGE, None, id="other-statuses-are-not-read"),
    pytest.param(400, {"error": {"message": "temperature must be at most 2", "param": "temperature"}}, None,
                 id="other-client-errors"),
])
def test_error_kinds(status: int, body: dict[str, Any], kind: str | None) -> None:
    assert kind_of(status, orjson.dumps(body)) == kind


def test_wording_is_read_in_a_plain_text_body_too() -> None:
    assert kind_of(400, b"Error: prompt is too long for this model") == "context_length"


def test_wording_past_the_bounded_prefix_is_never_read() -> None:
    body = b"x" * PREFIX_BYTES + b" maximum context length"
    assert kind_of(400, body) is None
    assert kind_of(400, body[PREFIX_BYTES:]) == "context_length"


@pytest.mark.parametrize(("name", "status", "kind"), [
    ("error-prompt-too-long.json", 400, "context_length"),
    ("error-prompt-too-long-stream.json", 400, "context_length"),
    ("error-completions-prompt-too-long.json", 400, "context_length"),
    ("error-embeddings-too-large.json", 500, "context_length"),
    ("error-embeddings-unsupported.json", 501, None),
    ("error-n2.json", 400, None),
])
def test_real_llamacpp_error_bodies(name: str, status: int, kind: str | None) -> None:
    """The bodies a real llama-server answered (tests/fixtures/llamacpp), read as the gateway reads them."""
    body = (LLAMACPP / name).read_bytes()
    assert orjson.loads((LLAMACPP / "index.json").read_bytes())["files"][name]["status"] == status
    assert kind_of(status, body) == kind
