"""Tools: the `switchyard` command, the demo, stand-in upstreams, explain and policy tests."""
