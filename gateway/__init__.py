"""Switchyard: an OpenAI- and Anthropic-compatible gateway that routes each request by policy (docs/architecture.md)."""
