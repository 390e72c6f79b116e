"""The error answers of the API as the OpenAPI document declares them: one body shape (ErrorBody) for every
4xx and 5xx, and one description of each status, shared by the routes."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from schemas.request import AttendRequest
from schemas.response import ErrorBody
from service.errors import LimitExceeded, NotAcceptable, Overloaded, detail_body
from service.server.accept import negotiate

# 401 is declared by the routes behind the API key; service/server/openapi_document.py drops it (and the
# security requirement) from the document when no keys are configured
UNAUTHORIZED = 401

ERROR_MEANING: dict[int, str] = {
    UNAUTHORIZED: "ATTENTION_API_KEYS is set and the X-API-Key header holds no valid key "
    "(with WWW-Authenticate: ApiKey).",
    406: "The Accept header names no format the service produces; `detail` lists those it does.",
    413: "The request or the response it would produce is over a limit: `limit`, `maximum` and `estimate` "
    "say which and by how much.",
    415: "The body is not declared as application/json (Content-Type).",
    422: "Malformed input: each item of `detail` names the field (`loc`), what was found and what was "
    "expected.",
    503: "Busy: every place is taken (retry after Retry-After seconds), a compute process is being replaced, "
    "or the named model cannot be served (e.g. its weights file fails its checksum).",
    504: "The request waited and computed longer than ATTENTION_REQUEST_TIMEOUT_S.",
}


def _refused(body: dict[str, Any]) -> dict[str, Any]:
    """The service's own 422 answer to `body`."""
    try:
        AttendRequest.model_validate(body)
    except ValidationError as error:
        return detail_body(error)
    raise AssertionError(f"{body} is a valid request")


def _not_acceptable(accept: str) -> str:
    """The service's own 406 message for this Accept header."""
    try:
        negotiate(accept)
    except NotAcceptable as refused:
        return str(refused)
    raise AssertionError(f"{accept} is acceptable")


# an answer of each status as the service writes it (the ones it computes, computed by its own code)
ERROR_EXAMPLE: dict[int, dict[str, Any]] = {
    UNAUTHORIZED: {"detail": "the X-API-Key header holds no valid key"},
    406: {"detail": _not_acceptable("text/html")},
    # a text over the longest sequence: its tokens are counted until one past the limit
    413: detail_body(LimitExceeded("ATTENTION_MAX_SEQ", 4096, 4097, "sequence length")),
    415: {"detail": "found 'text/plain'; expected Content-Type: application/json"},
    422: _refused({"txt": "The cat ate the fish"}),
    503: detail_body(Overloaded.no_place(18, light_processes=0)),  # 2 computing + 16 waiting: the defaults
    504: {
        "detail": "the request took longer than ATTENTION_REQUEST_TIMEOUT_S=60 s (waiting and computing); "
        "ask for less (fewer layers, tensors or tokens) or retry later"
    },
}


def error_responses(
    *statuses: int, examples: dict[int, dict[str, Any]] | None = None, **meanings: str
) -> dict[int | str, dict[str, Any]]:
    """The `responses` entries of these statuses, each with ErrorBody and a true example; `meanings`
    overrides a description (keyword `s503="..."`), `examples` an example."""
    return {
        status: {
            "model": ErrorBody,
            "description": meanings.get(f"s{status}", ERROR_MEANING[status]),
            "content": {"application/json": {"example": (examples or {}).get(status, ERROR_EXAMPLE[status])}},
        }
        for status in statuses
    }
