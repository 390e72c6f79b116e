"""Every error the service answers with, its HTTP status (one table, STATUSES), and the three bodies an error
is written in: the service's {"detail": ...} (detail_body), the Open Inference Protocol's {"error": ...}
(oip_error_body) and the last line of an NDJSON stream that broke off (stream_error_line).

Every 4xx names the field, what was found and what was expected. Compute processes raise the errors in a
request's content; the server raises the refusals (over a limit, busy, too slow) and ModelError when no
compute process can start. Nothing here imports FastAPI or torch: both processes use it."""

from __future__ import annotations

from typing import Any, NamedTuple

import orjson
from pydantic import BaseModel, ValidationError

from schemas.describe import describe
from schemas.request import AttendRequest
from schemas.unknown_fields import unknown_field_message


class RequestError(Exception):
    """A request that cannot be served as asked (422); `loc` is the field at fault."""

    def __init__(self, loc: tuple[str | int, ...], msg: str):
        super().__init__(msg)
        self.loc, self.msg = loc, msg


class InferRequestError(Exception):
    """An Open Inference Protocol request that does not fit the protocol or this service's models (400); its
    message names the input, output or parameter at fault as the infer request does."""


class ModelError(Exception):
    """A model that cannot be served: missing, tampered, unsupported (503 for a request, fatal at
    start-up)."""


class UnknownModel(Exception):
    """An Open Inference Protocol path names a model (or version) the service does not have (404)."""


class LimitExceeded(Exception):
    """The request, or the response it would produce, is over a configured limit (413)."""

    def __init__(self, limit: str, maximum: int, estimate: int, what: str):
        super().__init__(f"{what}: the estimate is {estimate:,}, over the limit {limit}={maximum:,}")
        self.limit, self.maximum, self.estimate = limit, maximum, estimate


class NotAcceptable(Exception):
    """The Accept header names no media type the service produces (406)."""


class UnsupportedMediaType(Exception):
    """A body a browser form could send, or a compressed one: it must not start a computation (415)."""


class Overloaded(Exception):
    """Every compute process is busy and the queue is full (503 with Retry-After)."""

    @classmethod
    def no_place(cls, places: int, light_processes: int) -> Overloaded:
        """Every place of the admission gate is taken: the settings that add up to `places` (the light lanes
        are places too, service/server/compute_pool.py)."""
        computing = "ATTENTION_MAX_CONCURRENT" + (" + ATTENTION_LIGHT_PROCESSES" if light_processes else "")
        return cls(
            f"all {places} places ({computing} computing + ATTENTION_MAX_QUEUE waiting) are taken; "
            "retry shortly"
        )


class TimedOut(Exception):
    """The request waited and computed longer than request_timeout_s (504)."""

    @classmethod
    def after(cls, timeout: float) -> TimedOut:
        return cls(
            f"the request took longer than ATTENTION_REQUEST_TIMEOUT_S={timeout:g} s (waiting and "
            "computing); ask for less (fewer layers, tensors or tokens) or retry later"
        )


class NoComputeProcess(Exception):
    """No compute process is running: every one is being replaced (503 with Retry-After)."""


class ComputeProcessDied(Exception):
    """The compute process stopped while computing this request (killed, out of memory); it is replaced
    (503)."""


class AnswerBroken(Exception):
    """A compute process could not finish a JSON answer it had begun to send in pieces (its status, 200, is
    sent already): the connection is closed with the answer unfinished, never ended as if complete (500)."""


class ClientGone(Exception):
    """The client disconnected before its answer was ready (499, which nobody reads)."""


class Status(NamedTuple):
    """How an error is answered: its HTTP status; for a refusal that protects the service, the reason it is
    counted under (/metrics: attention_rejected) and whether retrying soon may succeed (Retry-After: 1); and
    whether the server ends the connection after the answer (Connection: close), for a body refused unread
    whose rest it will not read (service/server/http_protocol.py)."""

    code: int
    refusal: str | None = None
    retry: bool = False
    close: bool = False


STATUSES: dict[type[Exception], Status] = {
    ValidationError: Status(422),  # a body that pydantic refused (/attend parses its own body)
    RequestError: Status(422),
    InferRequestError: Status(400),
    UnknownModel: Status(404),
    NotAcceptable: Status(406),
    LimitExceeded: Status(413, close=True),  # the server raises it for a body refused unread
    UnsupportedMediaType: Status(415),
    ModelError: Status(503),
    Overloaded: Status(503, "overloaded", retry=True),
    ComputeProcessDied: Status(503, "compute_process_died", retry=True),
    AnswerBroken: Status(500),
    NoComputeProcess: Status(503, "no_compute_process", retry=True),
    TimedOut: Status(504, "timeout"),
    ClientGone: Status(499, "client_disconnected"),
}
# what a compute process answers as a 4xx or 503 rather than a 500
REQUEST_ERRORS = (ValidationError, RequestError, LimitExceeded, ModelError)
# what the server process raises while it serves a request (ClientGone aside: nobody reads its answer)
SERVER_ERRORS = (
    InferRequestError,
    UnknownModel,
    NotAcceptable,
    LimitExceeded,
    UnsupportedMediaType,
    Overloaded,
    ComputeProcessDied,
    NoComputeProcess,
    TimedOut,
    AnswerBroken,
)
INTERNAL_ERROR = "the computation failed unexpectedly; the service log has the details"


def status_of(error: Exception) -> Status:
    """The error's entry of STATUSES (raises KeyError for an error that is not one of the service's)."""
    return next(STATUSES[kind] for kind in type(error).__mro__ if kind in STATUSES)


def answer_headers(status: Status) -> dict[str, str] | None:
    """The headers an error's answer carries in the server: Retry-After, Connection: close."""
    headers = {"Retry-After": "1"} if status.retry else {}
    if status.close:
        headers["Connection"] = "close"
    return headers or None


_UNION_TAGS = ("str", "int", "float", "bool")


def describe_validation_errors(
    errors: list[Any], prefix: tuple[str, ...] = ("body",), model: type[BaseModel] | None = None
) -> list[dict[str, Any]]:
    """pydantic's errors without the echoed input (a tensor can be megabytes), with what was found; pydantic's
    union member tags are dropped from the locations, and the deepest location comes first. An unknown field
    of `model` is told with the fields accepted there and the closest one."""
    items = []
    for error in errors:
        msg = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden" and model is not None:
            msg = unknown_field_message(model, tuple(error["loc"])) or msg
        if error["type"] not in ("json_invalid", "value_error", "extra_forbidden", "missing") and not error[
            "type"
        ].startswith("tensor_"):
            msg = f"{msg}; found {describe(error.get('input'))}"
        loc = [
            part
            for part in error["loc"]
            if not (isinstance(part, str) and ("[" in part or part in _UNION_TAGS))
        ]
        items.append({"loc": [*prefix, *loc], "msg": msg, "type": error["type"]})
    return sorted(items, key=lambda item: -len(item["loc"]))


def detail_body(error: Exception) -> dict[str, Any]:
    """The service's own error body: `detail` a list of {loc, msg, type} for a request's content (422), the
    limit, its maximum and the estimate beside it for a 413, the message otherwise."""
    if isinstance(error, ValidationError):
        return {
            "detail": describe_validation_errors(error.errors(include_url=False), ("body",), AttendRequest)
        }
    if isinstance(error, RequestError):
        return {"detail": [{"loc": ["body", *error.loc], "msg": error.msg, "type": "value_error"}]}
    if isinstance(error, LimitExceeded):
        return {
            "detail": str(error),
            "limit": error.limit,
            "maximum": error.maximum,
            "estimate": error.estimate,
        }
    return {"detail": str(error)}


def detail_answer(error: Exception) -> tuple[int, bytes]:
    """The status and {"detail"} body of an error of STATUSES."""
    return status_of(error).code, orjson.dumps(detail_body(error))


def oip_error_body(message: str) -> bytes:
    """The Open Inference Protocol's error body, which tritonclient and KServe read."""
    return orjson.dumps({"error": message})


def stream_error_line(status: int, body: dict[str, Any]) -> bytes:
    """The last line of an NDJSON stream that broke off after its first line: the status and the {"detail"}
    body it would have had as an answer."""
    return orjson.dumps({"error": {"status": status, **body}}) + b"\n"
