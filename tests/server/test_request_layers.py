"""What a small request costs the server process's own layers (issue 26), counted rather than timed: the
service's code an answer passes through on its way out (one ASGI layer, one send wrapper), the metrics'
labelled children looked up once per label set, the log line's time formatted once per second. In process,
through the ASGI app and its lifespan, with a computation that answers at once."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any, cast

import pytest
from starlette.types import Message, Send

from bench.instant import CANNED, InstantCompute
from service.logs import JsonFormatter
from service.protocol import ATTEND, ResponseFormat
from service.server.app import create_app
from service.server.compute_interface import ClientWatch, Held
from service.server.http_protocol import CLIENT_LEAVING, ClientLeaving
from service.server.observability import Metrics
from service.settings import Settings

WATCHES: list[ClientWatch | None] = []  # what each request handed the computation to watch its client with
LEAVING = ClientLeaving(cast(Any, None))  # the request's, as the service's HTTP protocol gives it
BODY = json.dumps({"embeddings": [[1.0, 0.0], [0.0, 1.0]]}).encode()


class AtOnce(InstantCompute):
    """bench/instant.py's computation that answers at once, noting what each request handed it to watch its
    client with."""

    async def run(
        self,
        body: bytes,
        disconnected: ClientWatch | None = None,
        media: ResponseFormat = ResponseFormat.JSON,
        kind: int = ATTEND,
        client: str = "",
    ) -> Held:
        WATCHES.append(disconnected)
        return await super().run(body, disconnected, media, kind, client)


async def _at_once(settings: Settings, metrics: Metrics) -> AtOnce:
    return AtOnce()


def _service_frames() -> list[str]:
    """The service's own functions on the stack of the caller's caller (`file:function`), outermost first."""
    frame: FrameType | None = sys._getframe(2)
    names = []
    while frame is not None:
        code = frame.f_code
        if "/service/server/" in code.co_filename:
            names.append(f"{Path(code.co_filename).name}:{code.co_name}")
        frame = frame.f_back
    return names[::-1]


def serve(requests: int) -> tuple[list[Message], list[str]]:
    """`requests` POST /attend through the app: the messages of the last answer, the service's frames on the
    stack where its head was sent."""
    app = create_app(Settings(), start_compute=_at_once)
    sent: list[Message] = []
    frames: list[str] = []

    async def run() -> None:
        started: asyncio.Queue[Message] = asyncio.Queue()
        events: asyncio.Queue[Message] = asyncio.Queue()
        await events.put({"type": "lifespan.startup"})
        state: dict[str, Any] = {}
        lifespan = asyncio.ensure_future(app({"type": "lifespan", "state": state}, events.get, started.put))
        assert (await started.get())["type"] == "lifespan.startup.complete"
        for _ in range(requests):
            sent.clear()
            await app(_scope(state), _receiver(), _sender(sent, frames))
        await events.put({"type": "lifespan.shutdown"})
        await lifespan

    asyncio.run(run())
    return sent, frames


def _scope(state: dict[str, Any]) -> dict[str, Any]:
    headers = [
        (b"host", b"test"),
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(BODY)),
    ]
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
        "scheme": "http",
        "method": "POST",
        "root_path": "",
        "path": "/attend",
        "raw_path": b"/attend",
        "query_string": b"",
        "headers": headers,
        "state": dict(state),
        "extensions": {CLIENT_LEAVING: LEAVING},
    }


def _receiver() -> Any:
    messages = [{"type": "http.request", "body": BODY, "more_body": False}]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        await asyncio.Event().wait()  # the client stays until cancelled
        raise AssertionError

    return receive


def _sender(sent: list[Message], frames: list[str]) -> Send:
    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            frames[:] = _service_frames()
        sent.append(message)

    return send


def test_an_answer_leaves_through_one_service_layer_and_one_send_wrapper():
    sent, frames = serve(1)
    assert sent[0]["status"] == 200 and sent[1]["body"] == CANNED
    # the answer itself and the observer's send wrapper; the layer that calls the observer, and the observer
    wrappers = [name for name in frames if name.endswith("send") or ":send_" in name]
    assert wrappers == ["observability.py:observed_send"], frames
    assert len(frames) == 4, frames
    assert WATCHES[-1] is LEAVING  # its client watched through the protocol's future, with no task
    names = [name for name, _ in sent[0]["headers"]]
    assert names[-3:] == [b"x-request-id", b"x-content-type-options", b"x-frame-options"]


def test_the_metrics_children_are_looked_up_once_per_label_set(monkeypatch: pytest.MonkeyPatch):
    calls: list[tuple[str, ...]] = []
    labels = type(Metrics().requests).labels

    def counted(self: Any, *values: str) -> Any:
        calls.append(values)
        return labels(self, *values)

    monkeypatch.setattr(type(Metrics().requests), "labels", counted)
    serve(3)
    assert calls.count(("/attend", "POST", "200")) == 1, calls


def test_the_log_lines_time_is_formatted_once_per_second(monkeypatch: pytest.MonkeyPatch):
    formatted: list[float] = []
    strftime = time.strftime

    def counted(form: str, moment: Any = None) -> str:
        formatted.append(moment)
        return strftime(form, moment)

    monkeypatch.setattr(time, "strftime", counted)
    formatter, second = JsonFormatter(), 1_764_741_600.0
    lines = []
    for created in (second + 0.125, second + 0.5, second + 0.75, second + 1.25):
        record = logging.LogRecord("attention_service.requests", logging.INFO, "", 0, "request", (), None)
        record.created, record.msecs = created, (created - int(created)) * 1000
        lines.append(json.loads(formatter.format(record))["time"])
    assert lines == [
        "2025-12-03T06:00:00.125Z",
        "2025-12-03T06:00:00.500Z",
        "2025-12-03T06:00:00.750Z",
        "2025-12-03T06:00:01.250Z",
    ]
    assert len(formatted) == 2  # one per second
