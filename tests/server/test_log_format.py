"""One log format: every line a served instance writes, on stderr and stdout, from start-up to shutdown, is
a JSON object: the service's own lines, the compute process's, and uvicorn's (its start-up and shutdown
lines, and its access log when it is on)."""

from __future__ import annotations

import json

import pytest

from devtools.servers import Server

KEYS = {"time", "level", "logger", "message"}


@pytest.mark.slow
def test_every_line_of_a_served_instance_is_json(tmp_path):
    log = tmp_path / "service.log"
    # uvicorn at its default level (serve.sh and the image use it) and with its access log on
    with Server(log=log, uvicorn_args=("--log-level", "info", "--access-log")) as server:
        assert server.client.get("/docs").status_code == 200
        assert server.post({"embeddings": [[1.0, 0.0], [0.0, 1.0]]}).status_code == 200
        assert server.post({"embeddings": [[1.0], []]}).status_code == 422
        assert server.client.get("/missing").status_code == 404
    lines = log.read_text().splitlines()
    entries = []
    for line in lines:
        entry = json.loads(line)  # fails on any plain-text line
        assert isinstance(entry, dict) and set(entry) >= KEYS, line
        entries.append(entry)
    uvicorn = [e["message"] for e in entries if e["logger"].startswith("uvicorn.error")]
    assert any(m.startswith("Started server process") for m in uvicorn), uvicorn
    assert "Application startup complete." in uvicorn and "Shutting down" in uvicorn, uvicorn
    assert any(m.startswith("Finished server process") for m in uvicorn), uvicorn  # the last line too
    access = {(e["method"], e["path"], e["status"]) for e in entries if e["logger"] == "uvicorn.access"}
    assert {("GET", "/docs", 200), ("POST", "/attend", 200), ("POST", "/attend", 422)} <= access, access
    assert ("GET", "/missing", 404) in access
    loggers = {e["logger"] for e in entries}
    assert {"attention_service.requests", "attention_service.compute", "attention_service"} <= loggers
