"""The policy: its schema, loading and checks, and the decision it makes for each request (pure: no I/O, no clock)."""
