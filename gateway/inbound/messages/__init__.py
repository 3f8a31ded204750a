"""Anthropic's Messages API: requests translated to chat completions and answers back, errors in its shape."""
