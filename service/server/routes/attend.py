"""POST /attend: pick the format from Accept, read the body within its byte limit, hand it to a compute
process, deliver the answer (in one piece, or a stream's lines as they come)."""

from __future__ import annotations

import asyncio
import time
from functools import partial

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.requests import ClientDisconnect
from starlette.routing import Match, Route
from starlette.types import Receive, Scope, Send

from schemas.request import AttendRequest
from schemas.response import AttendResponse
from service.errors import (
    SERVER_ERRORS,
    ClientGone,
    LimitExceeded,
    UnsupportedMediaType,
    detail_body,
    status_of,
    stream_error_line,
)
from service.protocol import MEDIA_TYPES, ResponseFormat
from service.server.accept import negotiate
from service.server.compute_interface import ClientWatch, Compute, Held
from service.server.handlers import JSON_MEDIA_TYPE
from service.server.http_protocol import CLIENT_LEAVING, ClientLeaving
from service.server.leaving import unless_client_leaves
from service.server.openapi_examples import request_examples
from service.server.routes.documented import UNAUTHORIZED, error_responses
from service.server.security import KeyedCompute, keyed, sent_api_key
from service.server.state import service_state
from service.settings import Settings

CHUNK = 2**20  # an answer over this is sent in pieces of it, each within the send timeout

router = APIRouter(tags=["attention"])


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused as soon as it is known to exceed `limit` bytes, never read beyond it."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise LimitExceeded("ATTENTION_MAX_REQUEST_BYTES", limit, int(declared), "request body bytes")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise LimitExceeded(
                    "ATTENTION_MAX_REQUEST_BYTES", limit, size, "request body bytes (read so far)"
                )
            chunks.append(chunk)
    except ClientDisconnect:  # left mid-upload: the client's doing, not an error of the service
        raise ClientGone() from None
    return b"".join(chunks)


def check_json_declared(request: Request) -> None:
    """A 415 unless the body is declared JSON: form, text and multipart bodies are what a browser sends from
    any web page without a CORS preflight, so they must not start a computation."""
    declared = request.headers.get("content-type", "")
    if declared.split(";", 1)[0].strip().lower() == JSON_MEDIA_TYPE:
        return
    found = repr(declared) if declared else "no Content-Type"
    raise UnsupportedMediaType(f"found {found}; expected Content-Type: {JSON_MEDIA_TYPE}")


async def send_in_pieces(send: Send, body: bytes | memoryview, timeout: float, more_body: bool) -> None:
    """`body` in pieces of CHUNK bytes, each sent within `timeout` (raises TimeoutError)."""
    view = memoryview(body)
    for offset in range(0, max(len(view), 1), CHUNK):
        last = offset + CHUNK >= len(view)
        piece = {
            "type": "http.response.body",
            "body": view[offset : offset + CHUNK],
            "more_body": more_body or not last,
        }
        await asyncio.wait_for(send(piece), timeout)


class DeliveredResponse(Response):
    """The compute process's answer, whose bytes the compute pool counts until it is delivered (slow readers
    cannot pile up answers in memory beyond ATTENTION_MAX_ANSWER_BYTES_IN_FLIGHT): each megabyte must be read
    within the send timeout, and the whole within the send timeout plus its size at the slowest rate allowed,
    else the connection is closed."""

    def __init__(self, held: Held, send_timeout: float, media_type: str = JSON_MEDIA_TYPE):
        super().__init__(held.content, status_code=held.status, media_type=media_type)
        self.release, self.send_timeout = held.release, send_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        settings = service_state(scope["app"]).settings
        try:
            await send(
                {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
            )
            if len(self.body) <= CHUNK:  # fits the socket's buffers: sent without waiting for the reader
                await send({"type": "http.response.body", "body": self.body})
                return
            whole = self.send_timeout + len(self.body) / settings.min_send_bytes_per_s
            await asyncio.wait_for(send_in_pieces(send, self.body, self.send_timeout, more_body=False), whole)
        except TimeoutError:
            # the connection is closed with the answer unfinished (uvicorn logs the response as incomplete)
            service_state(scope["app"]).metrics.rejected.labels("send_timeout").inc()
        finally:
            self.release()


class StreamedResponse(Response):
    """An NDJSON stream: its first line, then each line as the compute process sends it, each megabyte within
    the send timeout, and the whole at the slowest rate allowed, as DeliveredResponse: the time spent
    sending (not waiting for the computation) stays within the send timeout plus the bytes sent at
    min_send_bytes_per_s, else the connection is closed (the compute pool holds the lines computed and not
    yet read, which are memory). Its bytes are released at the end. A stream the service breaks off (time
    limit, compute process died, its unread lines outgrew the room for them) ends with a line
    `{"error": {"status": ..., "detail": ...}}`, as one the computation itself breaks off does.

    A JSON answer larger than a frame comes in frames too (service/compute/pipeline.py frames) and is
    delivered the same way, as it comes (`media` JSON); JSON has no line to say it broke off, so a JSON
    answer that breaks off is closed unfinished (its chunked body never ended), which a client reads as an
    error, never as a complete answer."""

    def __init__(self, held: Held, send_timeout: float, media: ResponseFormat = ResponseFormat.NDJSON):
        super().__init__(held.content, status_code=held.status, media_type=MEDIA_TYPES[media])
        self.error_line = media == ResponseFormat.NDJSON
        self.held, self.send_timeout = held, send_timeout
        # its length is unknown until it ends: sent chunked, not with the first line's length
        self.raw_headers = [(name, value) for name, value in self.raw_headers if name != b"content-length"]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = service_state(scope["app"])
        metrics, slowest = state.metrics, state.settings.min_send_bytes_per_s
        mid_line = False  # a line's pieces come in several frames: the stream may break off within one
        sent, sending = 0, 0.0  # bytes sent so far, and the seconds spent sending them

        async def send_line(line: bytes | memoryview) -> None:
            nonlocal mid_line, sent, sending
            sent += len(line)
            allowed = self.send_timeout + sent / slowest - sending
            started = time.monotonic()
            try:
                await asyncio.wait_for(send_in_pieces(send, line, self.send_timeout, more_body=True), allowed)
            finally:
                sending += time.monotonic() - started
            if len(line):
                mid_line = bytes(line[-1:]) != b"\n"

        try:
            await send(
                {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
            )
            await send_line(self.body)
            assert self.held.stream is not None
            try:
                if not await unless_client_leaves(self.held.stream(send_line), receive):
                    return  # gone: its answer is released, and the rest of it not computed
            except SERVER_ERRORS as broken:
                status = status_of(broken)
                if status.refusal is not None:
                    metrics.rejected.labels(status.refusal).inc()
                if not self.error_line:
                    return  # uvicorn closes the connection of a response left unfinished
                error = stream_error_line(status.code, detail_body(broken))
                await send_line(b"\n" + error if mid_line else error)  # the cut line ends first
            await asyncio.wait_for(send({"type": "http.response.body", "body": b""}), self.send_timeout)
        except TimeoutError:
            metrics.rejected.labels("send_timeout").inc()  # closed unfinished, as DeliveredResponse
        finally:
            self.held.release()


def client_address(request: Request) -> str:
    return request.client.host if request.client is not None else ""


async def client_disconnected(request: Request) -> None:
    """Returns when the client goes away (the body has been read, so the next message is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def client_watch(request: Request) -> ClientWatch:
    """What tells the compute pool that the request's client has gone: served by the service's HTTP protocol,
    its future (http_protocol.py ClientLeaving: no task per request); otherwise (another server: a Ray
    replica, a test's ASGI transport) client_disconnected, a task waiting in `receive()`."""
    leaving = request.scope.get("extensions", {}).get(CLIENT_LEAVING)
    return leaving if isinstance(leaving, ClientLeaving) else partial(client_disconnected, request)


@router.post(
    "/attend",
    summary="Compute attention and return its internals",
    description="Q, K, V, the raw and scaled scores, the softmax weights, the per-head context and the "
    "output, each with all its axes (see `meta.axes`). The examples are the worked examples of the project, "
    "with exact expected values.",
    operation_id="attend",
    response_class=Response,
    responses={
        200: {
            "model": AttendResponse,
            "description": "The requested tensors and `meta`, in the format of the Accept header: JSON "
            "(default), a safetensors file (tensors by name, a model's layers as `layers.{i}.{name}`, "
            "`meta` and `tokens` as JSON strings in its `__metadata__`), or NDJSON (first "
            '`{"meta", "tokens"}`, then one line per layer as it is computed; a stream that breaks off ends '
            'with `{"error": {"status", "detail"}}`).',
            "content": {
                MEDIA_TYPES[ResponseFormat.SAFETENSORS]: {"schema": {"type": "string", "format": "binary"}},
                MEDIA_TYPES[ResponseFormat.NDJSON]: {"schema": {"type": "string"}},
            },
        },
        **error_responses(UNAUTHORIZED, 406, 413, 415, 422, 503, 504),
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                JSON_MEDIA_TYPE: {
                    "schema": {"$ref": f"#/components/schemas/{AttendRequest.__name__}"},
                    "examples": request_examples(),
                }
            },
        }
    },
)
async def post_attend(request: Request, keyed: KeyedCompute) -> Response:
    """The route FastAPI documents (its security, body and answers in /openapi.json); SERVED answers the
    requests, with the same steps."""
    return await attend(request, keyed.settings, keyed.compute)


async def attend(request: Request, settings: Settings, compute: Compute) -> Response:
    check_json_declared(request)
    media = negotiate(request.headers.get("accept"))
    body = await read_body(request, settings.max_request_bytes)
    held = await compute.run(
        body, disconnected=client_watch(request), media=media, client=client_address(request)
    )
    if held.stream is not None:  # NDJSON, or a JSON answer larger than a frame
        return StreamedResponse(held, settings.send_timeout_s, media)
    answered_as = MEDIA_TYPES[media] if held.status == 200 else JSON_MEDIA_TYPE
    return DeliveredResponse(held, settings.send_timeout_s, answered_as)


async def _served(request: Request) -> Response:
    """post_attend without FastAPI's dependency solving: the API key as api_key_header reads it, then the
    computation (security.keyed), then the same steps."""
    checked = keyed(request, sent_api_key(request))
    return await attend(request, checked.settings, checked.compute)


class _PostOnly(Route):
    """A Route that matches POST only: another method falls through to the APIRoute, whose 405 is FastAPI's
    {"detail"} answer."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] != "http" or scope["method"] != "POST":
            return Match.NONE, {}
        return super().matches(scope)


# POST /attend as the app's first route (service/server/app.py), in front of the APIRoute above: FastAPI's
# routing through the included routers and its dependency solving cost the server process about a third of
# a small request's CPU (issue 26, docs/benchmarks.md); its errors go to the app's handlers as the APIRoute's
# do (Starlette's request_response)
SERVED = _PostOnly("/attend", _served, methods=["POST"], include_in_schema=False)
