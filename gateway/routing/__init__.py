"""Routing: what a request holds (classify, detectors), the policy, and which upstreams are full."""
