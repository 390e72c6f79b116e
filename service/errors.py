"""Errors that both processes raise, and how they are written: every 4xx names the field, what was found and
what was expected. Compute processes raise most of them; the server raises LimitExceeded for bodies over
their byte limit and ModelError when no compute process can start."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from schemas.describe import describe
from schemas.request import AttendRequest
from schemas.unknown_fields import unknown_field_message


class RequestError(Exception):
    """A request that cannot be served as asked (422); `loc` is the field at fault."""

    def __init__(self, loc: tuple[str | int, ...], msg: str):
        super().__init__(msg)
        self.loc, self.msg = loc, msg


class ModelError(Exception):
    """A model that cannot be served: missing, tampered, unsupported (503 for a request, fatal at
    start-up)."""


class LimitExceeded(Exception):
    """The request, or the response it would produce, is over a configured limit (413)."""

    def __init__(self, limit: str, maximum: int, estimate: int, what: str):
        super().__init__(f"{what}: the estimate is {estimate:,}, over the limit {limit}={maximum:,}")
        self.limit, self.maximum, self.estimate = limit, maximum, estimate


REQUEST_ERRORS = (ValidationError, RequestError, LimitExceeded, ModelError)

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


def error_answer(exc: Exception) -> tuple[int, dict[str, Any]]:
    """The status and body for one of REQUEST_ERRORS."""
    if isinstance(exc, ValidationError):  # a body that pydantic refused (/attend parses its own body)
        found = describe_validation_errors(exc.errors(include_url=False), ("body",), AttendRequest)
        return 422, {"detail": found}
    if isinstance(exc, RequestError):
        return 422, {"detail": [{"loc": ["body", *exc.loc], "msg": exc.msg, "type": "value_error"}]}
    if isinstance(exc, LimitExceeded):
        return 413, {"detail": str(exc), "limit": exc.limit, "maximum": exc.maximum, "estimate": exc.estimate}
    if isinstance(exc, ModelError):
        return 503, {"detail": str(exc)}
    raise TypeError(f"not a request error: {exc!r}")
