"""Capacity-aware routing: read self-hosted engines' load, and say which upstreams are full."""
