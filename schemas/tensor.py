"""Tensor fields of the wire contract: nested JSON lists of finite numbers, validated into numpy arrays.

Each field states its axes (e.g. ``[batch, seq, d_model]``); the validator checks the nesting depth,
the element types (numbers only: no booleans, strings, nulls, NaN or Infinity), raggedness and empty
axes, and reports each problem with the exact position, what was found and what was expected.
The element check runs in pydantic-core (Rust) and the conversion in numpy, so a 50k-number matrix
costs well under a millisecond here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import numpy as np
from pydantic import (
    AllowInfNan,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    Strict,
    TypeAdapter,
    ValidationError,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError, core_schema

from schemas.describe import describe

FiniteNumber = Annotated[float, Strict(), AllowInfNan(False)]

_ELEMENT_CHECK: dict[int, TypeAdapter[Any]] = {
    1: TypeAdapter(list[FiniteNumber]),
    2: TypeAdapter(list[list[FiniteNumber]]),
    3: TypeAdapter(list[list[list[FiniteNumber]]]),
}


def _shape_text(axes: tuple[str, ...]) -> str:
    return "[" + ", ".join(axes) + "]"


def _nesting_depth(value: Any) -> tuple[int, bool]:
    """How deep the first items nest, and whether that descent ended in an empty list."""
    depth = 0
    while isinstance(value, list):
        depth += 1
        if not value:
            return depth, True
        value = value[0]
    return depth, False


def _path(loc: tuple[Any, ...]) -> str:
    return "".join(f"[{i}]" for i in loc if isinstance(i, int))


def _find_ragged(value: list[Any], path: str = "") -> str:
    """Locates the first pair of sibling lists whose lengths differ."""
    lengths = [len(item) if isinstance(item, list) else None for item in value]
    for index, length in enumerate(lengths):
        if length != lengths[0]:
            first = "a number" if lengths[0] is None else f"{lengths[0]} item(s)"
            found = "a number" if length is None else f"{length} item(s)"
            return f"item {path}[{index}] has {found} but {path}[0] has {first}"
    for index, item in enumerate(value):
        if isinstance(item, list):
            found = _find_ragged(item, f"{path}[{index}]")
            if found:
                return found
    return ""


def _checked_array(array: np.ndarray, ranks: dict[int, tuple[str, ...]], expected: str) -> np.ndarray:
    """A float64 array made from binary data (the Open Inference Protocol's tensors): the checks of a
    nested list, without going through Python numbers."""
    if array.ndim not in ranks:
        raise PydanticCustomError(
            "tensor_rank",
            "expected {expected} (rank {ranks}), found shape {shape}",
            {"expected": expected, "ranks": " or ".join(map(str, ranks)), "shape": list(array.shape)},
        )
    if 0 in array.shape:
        raise PydanticCustomError(
            "tensor_empty",
            "found shape {shape} with an empty axis; expected {expected}, every size at least 1",
            {"shape": list(array.shape), "expected": expected},
        )
    finite = np.isfinite(array)
    if not finite.all():
        where = tuple(int(i) for i in np.argwhere(~finite)[0])
        raise PydanticCustomError(
            "tensor_element",
            "item {path}: expected a finite number, found {found} (expected shape {expected})",
            {"path": _path(where), "found": repr(float(array[where])), "expected": expected},
        )
    return array


def _tensor_validator(axes_options: tuple[tuple[str, ...], ...]) -> Callable[[Any], np.ndarray]:
    ranks = {len(axes): axes for axes in axes_options}
    expected = " or ".join(_shape_text(axes) for axes in axes_options)

    def validate(value: Any) -> np.ndarray:
        if isinstance(value, np.ndarray) and value.dtype == np.float64:
            return _checked_array(value, ranks, expected)
        if isinstance(value, np.ndarray):
            value = value.tolist()
        depth, ends_empty = _nesting_depth(value)
        if depth not in ranks:
            found = describe(value) if depth == 0 else f"a list nested {depth} deep"
            if ends_empty:
                found = "an empty list"
            raise PydanticCustomError(
                "tensor_rank",
                "expected {expected} (lists nested {ranks} deep), found {found}",
                {"expected": expected, "ranks": " or ".join(map(str, ranks)), "found": found},
            )
        try:
            _ELEMENT_CHECK[depth].validate_python(value)
        except ValidationError as error:
            first = error.errors(include_url=False)[0]
            raise PydanticCustomError(
                "tensor_element",
                "item {path}: expected a finite number, found {found} (expected shape {expected})",
                {"path": _path(first["loc"]), "found": describe(first["input"]), "expected": expected},
            ) from None
        try:
            array = np.asarray(value, dtype=np.float64)
        except ValueError:
            raise PydanticCustomError(
                "tensor_ragged",
                "ragged list: {where}; expected {expected} with equal lengths along each axis",
                {"where": _find_ragged(value), "expected": expected},
            ) from None
        if array.ndim != depth or 0 in array.shape:
            raise PydanticCustomError(
                "tensor_empty",
                "found shape {shape} with an empty axis; expected {expected}, every size at least 1",
                {"shape": list(array.shape) if array.ndim == depth else "[]", "expected": expected},
            )
        return array

    return validate


def _json_schema(axes_options: tuple[tuple[str, ...], ...]) -> dict[str, Any]:
    def nested(rank: int) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "number"}
        for _ in range(rank):
            schema = {"type": "array", "items": schema, "minItems": 1}
        return schema

    options = [nested(len(axes)) for axes in axes_options]
    schema = options[0] if len(options) == 1 else {"anyOf": options}
    return schema | {"description": "shape " + " or ".join(_shape_text(a) for a in axes_options)}


class Axes:
    """Marks a numpy field as a tensor with one of the given axis layouts:
    ``Annotated[np.ndarray, Axes(("seq", "d"), ("batch", "seq", "d"))]``."""

    def __init__(self, *axes_options: tuple[str, ...]):
        self.axes_options = axes_options

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_plain_validator_function(_tensor_validator(self.axes_options))

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return _json_schema(self.axes_options)
