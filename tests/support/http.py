"""What the HTTP tests alone need beside a real server (devtools/servers.py starts it): the guarded server's
settings (tests/conftest.py), a value read from /metrics, and an answer's body read off a raw socket."""

from __future__ import annotations

import json
import re
from typing import NamedTuple

from devtools.servers import Server

# the guarded server of the HTTP tests (tests/server/conftest.py)
API_KEY = "k3y-for-tests-0123456789"
CORS_ORIGIN = "https://app.example"
GUARDED_MAX_REQUEST_BYTES = 20000
GUARDED_ENV = {
    "ATTENTION_MAX_CONCURRENT": "1",
    "ATTENTION_MAX_QUEUE": "1",
    "ATTENTION_API_KEYS": json.dumps([API_KEY]),
    "ATTENTION_CORS_ORIGINS": json.dumps([CORS_ORIGIN]),
    "ATTENTION_MAX_REQUEST_BYTES": str(GUARDED_MAX_REQUEST_BYTES),
}


def metric(srv: Server, line_start: str) -> float:
    """The value of the first /metrics line that starts with `line_start` (0 when absent)."""
    for line in srv.client.get("/metrics").text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


class Body(NamedTuple):
    """An HTTP/1.1 answer's body as read off a socket: its bytes, whether it arrived whole (False: the
    connection was closed with the answer unfinished), and where it ends in what was read."""

    content: bytes
    whole: bool
    end: int


def read_body(head: bytes, received: bytes) -> Body:
    """The body after `head` in `received`, by its Content-Length or chunked (a JSON answer over 1 MiB is
    sent in pieces)."""
    length = re.search(rb"content-length: (\d+)", head, re.IGNORECASE)
    if length is not None:
        size = int(length.group(1))
        return Body(received[:size], len(received) >= size, size)
    assert re.search(rb"transfer-encoding: chunked", head, re.IGNORECASE), head[:300]
    content, at = bytearray(), 0
    while (line_end := received.find(b"\r\n", at)) >= 0:
        size = int(received[at:line_end], 16)
        at = line_end + 2
        if size == 0:
            return Body(bytes(content), received[at : at + 2] == b"\r\n", at + 2)
        if len(received) < at + size + 2:
            break
        content += received[at : at + size]
        at += size + 2
    content += received[at:]  # a chunk cut off
    return Body(bytes(content), False, len(received))
