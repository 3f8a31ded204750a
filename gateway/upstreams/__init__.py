"""Upstreams: the wire formats upstreams speak, each client built from its own spec and read within its limits."""
