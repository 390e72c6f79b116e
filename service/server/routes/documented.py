"""The error answers of the API as the OpenAPI document declares them: one body shape (ErrorBody) for every
4xx and 5xx, and one description of each status, shared by the routes."""

from __future__ import annotations

from typing import Any

from schemas.response import ErrorBody

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


def error_responses(*statuses: int, **meanings: str) -> dict[int | str, dict[str, Any]]:
    """The `responses` entries of these statuses, each with ErrorBody; `meanings` overrides a description
    (keyword `s503="..."`)."""
    return {
        status: {"model": ErrorBody, "description": meanings.get(f"s{status}", ERROR_MEANING[status])}
        for status in statuses
    }
