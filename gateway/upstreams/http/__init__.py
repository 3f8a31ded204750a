"""The upstream HTTP/1.1 client: what OpenAI-compatible and Messages upstreams are sent over.

An upstream of this kind needs one thing of HTTP: POST a body, then read a whole answer or a stream. aiohttp's
client did that at about as much CPU a request as the rest of the gateway together (its URL, header, cookie,
trace and payload machinery); this one writes the request as bytes (wire.py), parses the answer with httptools,
uvicorn's parser (response.py), and keeps connections per origin (pool.py). It never follows a redirect and keeps
no cookies; its errors are the gateway's own, so nothing of the socket leaks past it.
"""

from gateway.upstreams.http.pool import Connection, Pool
from gateway.upstreams.http.response import Response
from gateway.upstreams.http.wire import Origin, header_lines

__all__ = ["Connection", "Origin", "Pool", "Response", "header_lines"]
