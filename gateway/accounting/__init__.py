"""Accounting: usage and cost per request, streamed tokens, and the answers a tenant's limits give."""
