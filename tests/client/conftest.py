"""The Python client (client/, package attention_client) against the real service: uvicorn in a subprocess
(devtools/servers.py) with API keys on and small body limits, so that 401, 413 and a 503 with Retry-After
can be produced on purpose, and besides MiniLM a tiny random Llama with grouped-query attention
(tests/support/families.py)."""

from __future__ import annotations

import json
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from attention_client import Client
from devtools.servers import Server
from tests.support.families import save_family_model
from tests.support.http import API_KEY

BODY_LIMIT = 20000  # ATTENTION_MAX_REQUEST_BYTES and ATTENTION_MAX_BODY_BYTES_IN_FLIGHT of the service below
SERVICE_ENV = {
    "ATTENTION_API_KEYS": json.dumps([API_KEY]),
    "ATTENTION_MAX_CONCURRENT": "1",
    "ATTENTION_MAX_REQUEST_BYTES": str(BODY_LIMIT),
    "ATTENTION_MAX_BODY_BYTES_IN_FLIGHT": str(BODY_LIMIT),
}

GROUPED = "tiny-llama"  # 4 query heads over 2 kv heads, rotary, causal


@pytest.fixture(scope="session")
def grouped_folder() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="attention-client-llama-"))
    yield save_family_model("llama", folder)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def service(grouped_folder: Path) -> Iterator[Server]:
    log = Path(tempfile.mkdtemp(prefix="attention-client-test-")) / "service.log"
    env = {**SERVICE_ENV, "ATTENTION_MODELS": json.dumps({GROUPED: str(grouped_folder)})}
    with Server(env, log=log) as srv:
        yield srv
    shutil.rmtree(log.parent, ignore_errors=True)


@pytest.fixture(scope="session")
def client(service: Server) -> Iterator[Client]:
    """The blocking client with the service's key (given, so ATTENTION_API_KEY is not read)."""
    with Client(service.url, api_key=API_KEY) as made:
        yield made


@contextmanager
def bodies_in_flight_full(service: Server) -> Iterator[socket.socket]:
    """A raw connection that declares a body of the service's whole ATTENTION_MAX_BODY_BYTES_IN_FLIGHT and
    sends all of it but its last byte (a body is charged what it has sent): until it is closed, every other
    request with a body is answered 503 with Retry-After. Returns once the service refuses a request that
    way."""
    blocker = socket.create_connection(("127.0.0.1", service.port), timeout=10)
    head = (
        "POST /attend HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        f"x-api-key: {API_KEY}\r\ncontent-length: {BODY_LIMIT}\r\n\r\n"
    )
    blocker.sendall(head.encode() + b" " * (BODY_LIMIT - 1))
    try:
        deadline = time.monotonic() + 10
        headers = {"content-type": "application/json", "x-api-key": API_KEY}
        while (
            httpx.post(service.url + "/attend", content=b"{}", headers=headers, timeout=10).status_code != 503
        ):
            assert time.monotonic() < deadline, "the service never counted the blocker's body in flight"
            time.sleep(0.05)
        yield blocker
    finally:
        blocker.close()
