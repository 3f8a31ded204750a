"""Embeddings through the gateway against vLLM's pooling server, compared with the same request sent to it."""

from __future__ import annotations

import openai
import pytest
from openai.types import CreateEmbeddingResponse

from tests.real.conftest import EMBED
from tests.real.wire import shape

pytestmark = pytest.mark.real

INPUTS = ["hello", ["hello", "the quick brown fox jumps over the lazy dog"]]


def compare(gw: openai.OpenAI, direct: openai.OpenAI, route: str, text: str | list[str]) -> None:
    """Floats (valid as the SDK's type) and base64 (what the SDK asks for when not told): the same from both."""
    for encoding in ("float", "base64"):
        through = gw.embeddings.with_raw_response.create(model=route, input=text, encoding_format=encoding)
        straight = direct.embeddings.with_raw_response.create(model=EMBED, input=text, encoding_format=encoding)
        assert through.status_code == straight.status_code == 200
        ours, theirs = through.http_response.json(), straight.http_response.json()
        if encoding == "float":
            CreateEmbeddingResponse.model_validate(ours)
        assert shape(ours) == shape(theirs)  # as many vectors, each as long
        assert ours["usage"] == theirs["usage"]
    assert len(through.parse().data[0].embedding) == len(straight.parse().data[0].embedding) > 0
    assert len(ours["data"]) == (len(text) if isinstance(text, list) else 1)


@pytest.mark.parametrize("text", INPUTS, ids=["one", "two"])
def test_embeddings_match_vllm(gw: openai.OpenAI, direct_embed: openai.OpenAI, text: str | list[str]) -> None:
    compare(gw, direct_embed, "embed-open", text)


# Needs the embeddings-estimate fix of issue 14 (point 2): the decision adds the route's default_max_tokens to an
# embedding's prompt estimate, so a 512-token window refuses even "hello" with context_length_exceeded.
@pytest.mark.parametrize("text", INPUTS, ids=["one", "two"])
def test_embeddings_on_a_512_token_window(gw: openai.OpenAI, direct_embed: openai.OpenAI,
                                          text: str | list[str]) -> None:
    compare(gw, direct_embed, "embed", text)


def test_embeddings_on_a_generate_server_are_refused_alike(gw: openai.OpenAI, direct: openai.OpenAI) -> None:
    """vLLM's generate server has no embeddings endpoint: the client gets its 404 through the gateway too."""
    with pytest.raises(openai.NotFoundError) as through:
        gw.embeddings.create(model="chat-open", input="hello")
    with pytest.raises(openai.NotFoundError) as straight:
        direct.embeddings.create(model="tiny", input="hello")
    assert through.value.status_code == straight.value.status_code == 404
    assert through.value.response.headers["x-switchyard-upstream"] == "vllm-open"
