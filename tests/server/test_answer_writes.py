"""An answer's head and body leave in one write (service/server/http_protocol.py `_LingeringClose`): uvicorn
writes the head on its own, and a second send per answer costs a small request's throughput (issue 26); and a
request's client is watched through the protocol's future (`ClientLeaving`), with no task per request. In
process, as tests/server/test_http_protocol_hooks.py: a fake transport that records each write, the protocol
fed bytes as a socket would feed them."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.server import ServerState

from service.server.http_protocol import CLIENT_LEAVING, HTTP_SETTINGS, HttpProtocol
from service.settings import Settings
from tests.support.transport import WritesTransport


async def answer(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """`ok` at once, or after a pause between the head and the body for a path of /later."""
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    if scope["path"] == "/later":
        await asyncio.sleep(0.05)
    await send({"type": "http.response.body", "body": b"ok"})


def serve(request: bytes) -> list[bytes]:
    """The writes of the answer to `request`, once the application is done."""
    loop = asyncio.new_event_loop()
    config = Config(app=answer, lifespan="off", log_level="warning")
    protocol = HttpProtocol(config, ServerState(), {HTTP_SETTINGS: Settings()}, _loop=loop)
    transport = WritesTransport()
    protocol.connection_made(transport)
    try:
        protocol.data_received(request)
        loop.run_until_complete(asyncio.sleep(0.2))
        return transport.writes
    finally:
        protocol.connection_lost(None)
        loop.close()


def test_an_answers_head_and_body_are_one_write():
    writes = serve(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
    assert len(writes) == 1, writes
    assert writes[0].startswith(b"HTTP/1.1 200") and writes[0].endswith(b"\r\n\r\nok")


@pytest.mark.parametrize(
    ("request_line", "body"), [(b"HEAD / HTTP/1.1", b""), (b"GET /later HTTP/1.1", b"ok")]
)
def test_a_head_without_a_body_at_once_is_still_written(request_line: bytes, body: bytes):
    """HEAD has no body to take the head along; a body sent later finds the head written before it."""
    writes = serve(request_line + b"\r\nHost: x\r\n\r\n")
    assert b"".join(writes).startswith(b"HTTP/1.1 200")
    assert b"".join(writes).endswith(b"\r\n\r\n" + body)


def test_a_requests_client_leaving_is_a_future_without_a_task():
    """The compute pool watches each request's client while it waits for its answer: served here, through
    the request's ClientLeaving (a future done when the client goes), not a task waiting in `receive()`."""
    loop = asyncio.new_event_loop()
    told: list[asyncio.Future[None]] = []
    tasks: list[int] = []

    async def waits_for_its_client(scope: dict[str, Any], receive: Any, send: Any) -> None:
        while (await receive()).get("more_body"):
            pass
        before = len(asyncio.all_tasks())
        leaving = scope["extensions"][CLIENT_LEAVING]
        told.append(leaving())
        tasks.append(len(asyncio.all_tasks()) - before)
        await told[0]
        told.append(leaving())

    config = Config(app=waits_for_its_client, lifespan="off", log_level="warning")
    protocol = HttpProtocol(config, ServerState(), {HTTP_SETTINGS: Settings()}, _loop=loop)
    protocol.connection_made(WritesTransport())
    try:
        protocol.data_received(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
        loop.run_until_complete(asyncio.sleep(0.05))
        assert tasks == [0] and not told[0].done()  # no task started; its client is there
        protocol.connection_lost(None)
        loop.run_until_complete(asyncio.sleep(0.05))
        assert told[0].done()
        assert told[1].done()  # asked once gone: done at once
    finally:
        loop.close()
