"""Schemathesis hooks (SCHEMATHESIS_HOOKS=tests.server.schemathesis.hooks): a check that holds the 413 and 422
answers allowed for schema-valid bodies of POST /attend (schemathesis.toml) to the rules JSON Schema cannot
state. A 422 for such a body must come from the compute stage (shapes across fields, dtype ranges, models and
layers), after the request model accepted the body, or from a ragged tensor; any other refusal by the request
model means the document allows what the service refuses, and fails."""

from __future__ import annotations

import json
from typing import Any

import schemathesis
from pydantic import ValidationError

from schemas.request import AttendRequest

# pydantic error types of rules that JSON Schema cannot state
INEXPRESSIBLE = {"tensor_ragged", "indexes_not_sorted"}


@schemathesis.check
def refusals_of_valid_bodies_are_cross_field(ctx: Any, response: Any, case: Any) -> bool | None:
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or case.operation.label != "POST /attend":
        return None
    if response.status_code != 422:
        return None
    try:
        AttendRequest.model_validate_json(json.dumps(case.body))
    except ValidationError as error:
        stated = [e for e in error.errors(include_url=False) if e["type"] not in INEXPRESSIBLE]
        if stated:
            shown = [(e["loc"], e["type"], e["msg"]) for e in stated[:3]]
            raise AssertionError(f"the document allows a body the request model refuses: {shown}") from None
    return None
