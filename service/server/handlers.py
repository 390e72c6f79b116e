"""The server's own refusals and their HTTP answers. Errors in a request's content are found and written by
the compute process (service/errors.py); the server only refuses a body over its byte limit, parameters
FastAPI validates, and requests it cannot serve in time or at all."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response

from service.errors import LimitExceeded, describe_validation_errors, error_answer


class Overloaded(Exception):
    """Every compute process is busy and the queue is full (503 with Retry-After)."""


class TimedOut(Exception):
    """The request waited and computed longer than request_timeout_s (504)."""


class ClientGone(Exception):
    """The client disconnected before its answer was ready."""


class NoComputeProcess(Exception):
    """No compute process is running: every one is being replaced (503 with Retry-After)."""


class ComputeProcessDied(Exception):
    """The compute process stopped while computing this request (killed, out of memory); it is replaced
    (503)."""


def json_response(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


# a body refused unread ends its connection: the rest of it is not read (service/server/http_protocol.py)
CLOSE = {"Connection": "close"}


async def on_body_too_large(_: Request, exc: Exception) -> Response:
    return json_response(*error_answer(exc), CLOSE)


async def on_request_validation_error(_: Request, exc: Exception) -> Response:
    """FastAPI's own parameter validation, whose locations already start with body, query or path."""
    assert isinstance(exc, RequestValidationError)
    return json_response(422, {"detail": describe_validation_errors(list(exc.errors()), prefix=())})


# requests the service refused to protect itself: metrics reason, status, whether retrying soon may succeed
REFUSALS: dict[type[Exception], tuple[str, int, bool]] = {
    Overloaded: ("overloaded", 503, True),
    ComputeProcessDied: ("compute_process_died", 503, True),
    NoComputeProcess: ("no_compute_process", 503, True),
    TimedOut: ("timeout", 504, False),
}


async def on_refused(request: Request, exc: Exception) -> Response:
    reason, status, retry = REFUSALS[type(exc)]
    request.app.state.metrics.rejected.labels(reason).inc()
    return json_response(status, {"detail": str(exc)}, {"Retry-After": "1"} if retry else None)


async def on_client_gone(request: Request, _: Exception) -> Response:
    """Nobody reads this answer; 499 (nginx's "client closed request") marks it in the logs and metrics."""
    request.app.state.metrics.rejected.labels("client_disconnected").inc()
    return Response(status_code=499)


Handler = Callable[[Request, Any], Coroutine[Any, Any, Response]]
HANDLERS: dict[int | type[Exception], Handler] = {
    LimitExceeded: on_body_too_large,
    RequestValidationError: on_request_validation_error,
    **dict.fromkeys(REFUSALS, on_refused),
    ClientGone: on_client_gone,
}
