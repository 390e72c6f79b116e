"""The server's error answers in the service's own dialect, {"detail": ...}, with the statuses of
service/errors.py. Errors in a request's content are found and written by the compute process; the server only
refuses a body over its byte limit, parameters FastAPI validates, and requests it cannot serve in time or at
all (each counted by its reason in /metrics)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import ValidationError

from service.errors import (
    SERVER_ERRORS,
    STATUSES,
    ClientGone,
    Status,
    answer_headers,
    describe_validation_errors,
    detail_body,
    status_of,
)
from service.protocol import MEDIA_TYPES, ResponseFormat
from service.server.state import service_state

JSON_MEDIA_TYPE = MEDIA_TYPES[ResponseFormat.JSON]


def json_response(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=JSON_MEDIA_TYPE, headers=headers)


def count_refusal(request: Request, status: Status) -> None:
    """A refusal that protects the service, counted by its reason (attention_rejected)."""
    if status.refusal is not None:
        service_state(request.app).metrics.rejected.labels(status.refusal).inc()


async def on_service_error(request: Request, exc: Exception) -> Response:
    status = status_of(exc)
    count_refusal(request, status)
    return json_response(status.code, detail_body(exc), answer_headers(status))


async def on_request_validation_error(_: Request, exc: Exception) -> Response:
    """FastAPI's own parameter validation, whose locations already start with body, query or path; the status
    of a body pydantic refused."""
    assert isinstance(exc, RequestValidationError)
    return json_response(
        STATUSES[ValidationError].code, {"detail": describe_validation_errors(list(exc.errors()), prefix=())}
    )


async def on_client_gone(request: Request, exc: Exception) -> Response:
    """Nobody reads this answer; 499 (nginx's "client closed request") marks it in the logs and metrics."""
    status = status_of(exc)
    count_refusal(request, status)
    return Response(status_code=status.code)


Handler = Callable[[Request, Any], Coroutine[Any, Any, Response]]
HANDLERS: dict[int | type[Exception], Handler] = {
    **dict.fromkeys(SERVER_ERRORS, on_service_error),
    RequestValidationError: on_request_validation_error,
    ClientGone: on_client_gone,
}
