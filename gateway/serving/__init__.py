"""Serving: the ASGI app, connection limits, authentication, admin reads, and the uvicorn runner."""
