"""The wire formats clients speak, and what each needs remembered between requests."""
