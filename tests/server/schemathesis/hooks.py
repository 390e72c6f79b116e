"""Schemathesis hooks (SCHEMATHESIS_HOOKS=tests.server.schemathesis.hooks): a check that holds the 413 and 422
answers allowed for schema-valid bodies of POST /attend (schemathesis.toml) to the rules JSON Schema cannot
state. A 422 for such a body must come from the compute stage (shapes across fields, dtype ranges, models and
layers), after the request model accepted the body, or from a ragged tensor; any other refusal by the request
model means the document allows what the service refuses, and fails.

And the Open Inference Protocol's infer bodies generated as valid are made to keep the rules of the protocol
that its JSON Schema cannot state: an input's data holds its shape's product of elements, of its datatype;
that datatype is one its input takes (text BYTES; the mask INT64, BOOL, FP32 or FP64; the others FP32 or
FP64); its shape has the input's rank and fits the limits on sizes. Without them nearly every generated body
is refused, and the tester reaches nothing past the protocol's checks. Which inputs a model takes together
(weights all or none, query with key and value, text alone for a pretrained model) is left to chance: a few
in a hundred generated bodies are computed."""

from __future__ import annotations

import json
import math
from typing import Any

import schemathesis
from pydantic import ValidationError

from schemas.oip import (
    BYTES,
    EMBEDDING_INPUTS,
    INPUT_SHAPES,
    input_datatypes,
)
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


INFER = {"POST /v2/models/{name}/infer", "POST /v2/models/{name}/versions/{version}/infer"}
ELEMENT_OF = {BYTES: "a cat", "BOOL": True, "INT64": 1, "FP32": 0.5, "FP64": 0.25}
# a larger shape is cut down to this many elements, data that fits the API-key test's 20,000-byte bodies
MOST_ELEMENTS = 512


def _rank(name: str, generated: int) -> int:
    rank = len(INPUT_SHAPES[name])
    return generated if name in EMBEDDING_INPUTS and generated in (2, 3) else rank


def _keep_counts(tensor: dict[str, Any]) -> None:
    """Shape to the input's rank and under the limits, datatype one the input takes, data of that many
    elements."""
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(isinstance(size, int | float) for size in shape):
        return
    rank = _rank(tensor["name"], len(shape))
    shape[:] = [max(1, int(size)) for size in (shape + [1] * rank)[:rank]]
    while math.prod(shape) > MOST_ELEMENTS:
        largest = shape.index(max(shape))
        shape[largest] //= 2
    allowed = input_datatypes(tensor["name"])
    if tensor.get("datatype") not in allowed:
        tensor["datatype"] = allowed[0]
    tensor["data"] = [ELEMENT_OF[tensor["datatype"]]] * math.prod(shape)
    if isinstance(tensor.get("parameters"), dict):
        tensor["parameters"].pop("binary_data_size", None)


@schemathesis.hook
def map_case(ctx: Any, case: Any) -> Any:
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or case.operation.label not in INFER:
        return case
    inputs = case.body.get("inputs") if isinstance(case.body, dict) else None
    for tensor in inputs if isinstance(inputs, list) else []:
        if isinstance(tensor, dict) and tensor.get("name") in INPUT_SHAPES:
            _keep_counts(tensor)
    return case
