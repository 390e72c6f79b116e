"""What the HTTP tests alone need beside a real server (devtools/servers.py starts it): the guarded server's
settings (tests/conftest.py), and a value read from /metrics."""

from __future__ import annotations

import json

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
