"""Client errors and how they are written: every 4xx names the field, what was found and what was expected."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import ValidationError

from schemas.describe import describe


class RequestError(Exception):
    """A request that cannot be served as asked (422 by default); `loc` is the field at fault."""

    def __init__(self, loc: tuple[str | int, ...], msg: str, status: int = 422, kind: str = "value_error"):
        super().__init__(msg)
        self.loc, self.msg, self.status, self.kind = loc, msg, status, kind


class ModelError(Exception):
    """A model that cannot be served: missing, tampered, unsupported (503 for a request, fatal at start-up)."""


class LimitExceeded(Exception):
    """The request, or the response it would produce, is over a configured limit (413)."""

    def __init__(self, limit: str, maximum: int, estimate: int, what: str):
        super().__init__(f"{what}: the estimate is {estimate:,}, over the limit {limit}={maximum:,}")
        self.limit, self.maximum, self.estimate = limit, maximum, estimate


class Overloaded(Exception):
    """Every compute process is busy and the queue is full (503 with Retry-After)."""


class TimedOut(Exception):
    """The request waited and computed longer than request_timeout_s (504)."""


class ClientGone(Exception):
    """The client disconnected before its answer was ready."""


class WorkerDied(Exception):
    """The compute process stopped while computing this request (killed, out of memory); it is replaced (503)."""


REQUEST_ERRORS = (ValidationError, RequestError, LimitExceeded, ModelError)


_UNION_TAGS = ("str", "int", "float", "bool")


def describe_validation_errors(errors: list[dict[str, Any]], prefix: tuple[str, ...] = ("body",)) -> list[dict[str, Any]]:
    """pydantic's errors without the echoed input (a tensor can be megabytes), with what was found; pydantic's
    union member tags are dropped from the locations, and the deepest location comes first."""
    items = []
    for error in errors:
        msg = error["msg"].removeprefix("Value error, ")
        if error["type"] not in ("json_invalid", "value_error", "extra_forbidden", "missing") and \
                not error["type"].startswith("tensor_"):
            msg = f"{msg}; found {describe(error.get('input'))}"
        loc = [part for part in error["loc"]
               if not (isinstance(part, str) and ("[" in part or part in _UNION_TAGS))]
        items.append({"loc": [*prefix, *loc], "msg": msg, "type": error["type"]})
    return sorted(items, key=lambda item: -len(item["loc"]))


def json_response(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def error_answer(exc: Exception) -> tuple[int, dict[str, Any]]:
    """The status and body for one of REQUEST_ERRORS (raised where the request is computed, in a compute process,
    or while its body is read)."""
    if isinstance(exc, ValidationError):  # a body that pydantic refused (/attend parses its own body)
        return 422, {"detail": describe_validation_errors(exc.errors(include_url=False), prefix=("body",))}
    if isinstance(exc, RequestError):
        return exc.status, {"detail": [{"loc": ["body", *exc.loc], "msg": exc.msg, "type": exc.kind}]}
    if isinstance(exc, LimitExceeded):
        return 413, {"detail": str(exc), "limit": exc.limit, "maximum": exc.maximum, "estimate": exc.estimate}
    if isinstance(exc, ModelError):
        return 503, {"detail": str(exc)}
    raise TypeError(f"not a request error: {exc!r}")


async def on_request_problem(_: Request, exc: Exception) -> Response:
    return json_response(*error_answer(exc))


async def on_request_validation_error(_: Request, exc: RequestValidationError) -> Response:
    """FastAPI's own parameter validation, whose locations already start with body, query or path."""
    return json_response(422, {"detail": describe_validation_errors(list(exc.errors()), prefix=())})


# requests the service refused to protect itself: metrics reason, status, whether retrying soon may succeed
REFUSALS: dict[type[Exception], tuple[str, int, bool]] = {
    Overloaded: ("overloaded", 503, True),
    WorkerDied: ("compute_process_died", 503, True),
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


HANDLERS = {
    **{kind: on_request_problem for kind in REQUEST_ERRORS},
    RequestValidationError: on_request_validation_error,
    **{kind: on_refused for kind in REFUSALS},
    ClientGone: on_client_gone,
}
