"""What the gateway learns as it runs: live latency now; budgets, limits and circuits as they arrive."""
