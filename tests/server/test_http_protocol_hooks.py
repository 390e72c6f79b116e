"""service/server/http_protocol.py subclasses uvicorn's httptools protocol, a private module: the hooks it
overrides must still exist with the same parameters and still be called by uvicorn, or its limits would
silently stop applying. pyproject.toml pins the uvicorn range these tests passed on; a release outside it is
checked here first. In process: a fake transport, the protocol fed bytes as a socket would feed them."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from service.server.http_protocol import CONNECTION_REFUSALS, HTTP_SETTINGS, HttpProtocol, Limits
from service.settings import Settings, get_settings
from tests.support.transport import WritesTransport

OVERRIDDEN = (
    "__init__",
    "connection_made",
    "connection_lost",
    "data_received",
    "on_message_begin",
    "on_headers_complete",
    "on_body",
    "on_message_complete",
    "on_response_complete",
    "_start_asgi_task",
)


async def answer_ok(scope: dict[str, Any], receive: Any, send: Any) -> None:
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


def test_every_overridden_hook_is_uvicorns_with_the_same_parameters():
    assert set(OVERRIDDEN) == {
        name
        for name, value in vars(HttpProtocol).items()
        if callable(value) and hasattr(HttpToolsProtocol, name)
    }
    for name in OVERRIDDEN:
        ours = list(inspect.signature(getattr(HttpProtocol, name)).parameters)
        theirs = list(inspect.signature(getattr(HttpToolsProtocol, name)).parameters)
        assert ours == theirs, name


@pytest.fixture
def protocol():
    loop = asyncio.new_event_loop()
    settings = Settings(max_header_bytes=1024, max_request_bytes=1000, max_body_bytes_in_flight=1000)
    config = Config(app=answer_ok, lifespan="off", log_level="warning")
    made = HttpProtocol(config, ServerState(), {HTTP_SETTINGS: settings}, _loop=loop)
    transport = WritesTransport()
    made.connection_made(transport)
    yield made, transport, loop
    made.connection_lost(None)
    loop.close()


def test_uvicorn_calls_the_header_hooks_a_header_over_the_limit_is_431(protocol):
    made, transport, _ = protocol
    before = CONNECTION_REFUSALS["header_too_large"]
    made.data_received(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 2000 + b"\r\n\r\n")
    assert transport.written.startswith(b"HTTP/1.1 431")
    assert CONNECTION_REFUSALS["header_too_large"] == before + 1


def test_uvicorn_calls_the_body_and_response_hooks_a_body_is_charged_until_answered(protocol):
    made, transport, loop = protocol
    assert HttpProtocol.body_bytes_in_flight == 0
    made.data_received(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
    assert HttpProtocol.body_bytes_in_flight == 0  # a body is charged as it arrives, not as declared
    made.data_received(b"0123456789")
    assert HttpProtocol.body_bytes_in_flight == 10  # on_body charged what arrived
    loop.run_until_complete(asyncio.sleep(0.05))  # the application reads the body and answers
    assert transport.written.startswith(b"HTTP/1.1 200")
    assert HttpProtocol.body_bytes_in_flight == 0  # on_response_complete gave the charge back


def test_the_limits_are_the_apps_settings_else_the_environments():
    published = Settings(max_header_bytes=2048, max_connections=3)
    assert Limits.of({HTTP_SETTINGS: published}).max_header_bytes == 2048
    assert Limits.of({HTTP_SETTINGS: published}).max_connections == 3
    environment = get_settings()  # an app that publishes none (the benchmark's baseline)
    assert Limits.of({}).max_header_bytes == environment.max_header_bytes
    assert Limits.of({}).max_connections == environment.max_connections
