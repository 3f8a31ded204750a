"""The catalog the policy loader asks: `openai` always, other kinds and list prices through litellm."""

from __future__ import annotations

import pytest

from gateway.upstreams.catalog import LitellmCatalog

pytestmark = pytest.mark.filterwarnings("ignore:.*`ReadOnly` qualifier:UserWarning")  # litellm's, at import


def test_openai_is_always_known() -> None:
    assert LitellmCatalog().knows("openai")


def test_litellms_providers_are_known_and_made_up_ones_are_not() -> None:
    catalog = LitellmCatalog()
    assert catalog.knows("anthropic")
    assert not catalog.knows("no_such_provider")


def test_a_listed_model_has_a_price_per_token_and_an_unlisted_one_none() -> None:
    catalog = LitellmCatalog()
    assert catalog.price("anthropic", "claude-sonnet-4-5") == (3e-06, 1.5e-05, 3e-07, 3.75e-06, 6e-06)  # with cache
    assert catalog.price("openai", "gpt-4o") is not None
    assert catalog.price("anthropic", "no-such-model") is None
