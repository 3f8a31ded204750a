"""Delivery: try a decision's candidates, relay and continue streams, and clean what upstreams send."""
