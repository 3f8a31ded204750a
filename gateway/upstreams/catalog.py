"""The catalog the policy loader asks about upstream kinds and prices: litellm's, imported only when asked."""

from __future__ import annotations

import importlib.util


class LitellmCatalog:
    """Knows `openai` always; other kinds and price-map prices through litellm, if it is installed."""

    def knows(self, kind: str) -> bool:
        if kind == "openai":
            return True
        if importlib.util.find_spec("litellm") is None:
            return False
        from gateway.upstreams import litellm_adapter

        return litellm_adapter.knows(kind)

    def price(self, kind: str, model: str) -> tuple[float, float, float, float, float] | None:
        if importlib.util.find_spec("litellm") is None:
            return None
        from gateway.upstreams import litellm_adapter

        return litellm_adapter.price(kind, model)
