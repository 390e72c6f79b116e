"""The input tensors of an Open Inference Protocol infer request, JSON or binary, as numpy arrays (and texts),
each checked against its declared datatype and shape before anything is allocated for it: a binary input's
size must be its shape times its datatype's width and lie inside the body, a JSON input's data must hold
exactly its shape's element count."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from pydantic import StrictBool, StrictInt, StrictStr, TypeAdapter, ValidationError

from schemas.describe import describe
from schemas.oip import (
    BINARY_DATA_SIZE,
    BYTES,
    FLOAT_DATATYPES,
    NUMERIC_DATATYPES,
    TEXT_INPUT,
    InferInput,
    input_datatypes,
)
from schemas.tensor import FiniteNumber
from service.compute.limits import check_batch
from service.errors import InferRequestError
from service.settings import Settings

MAX_RANK = 8
Decoded = np.ndarray | list[str]  # a float64 array, or the texts of `text`

_ELEMENTS: dict[str, TypeAdapter[Any]] = {
    "FP32": TypeAdapter(list[FiniteNumber]),
    "FP64": TypeAdapter(list[FiniteNumber]),
    "INT64": TypeAdapter(list[StrictInt]),
    "BOOL": TypeAdapter(list[StrictBool]),
    BYTES: TypeAdapter(list[StrictStr]),
}


def _element_count(tensor: InferInput) -> int:
    if len(tensor.shape) > MAX_RANK:
        raise InferRequestError(
            f"input {tensor.name!r}: found shape {tensor.shape}; expected at most {MAX_RANK} axes"
        )
    negative = [size for size in tensor.shape if size < 0]
    if negative:
        raise InferRequestError(
            f"input {tensor.name!r}: found shape {tensor.shape}; expected sizes of at least 0 "
            "(a request's shape is exact: -1 appears only in model metadata)"
        )
    if 0 in tensor.shape:  # refused here: numpy cannot even shape an empty array whose other axes are huge
        raise InferRequestError(
            f"input {tensor.name!r}: found shape {tensor.shape} with an empty axis; expected every size at "
            "least 1 (no input of a model is empty)"
        )
    return math.prod(tensor.shape)


def _binary_size(tensor: InferInput) -> int | None:
    size = (tensor.parameters or {}).get(BINARY_DATA_SIZE)
    if size is None:
        return None
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise InferRequestError(
            f"input {tensor.name!r}: found parameters.{BINARY_DATA_SIZE} {describe(size)}; expected a "
            "number of bytes (an integer of at least 0)"
        )
    if tensor.data is not None:
        raise InferRequestError(
            f"input {tensor.name!r}: found both data and parameters.{BINARY_DATA_SIZE}; expected one of them"
        )
    return size


def _flatten(name: str, data: Any, shape: list[int]) -> list[Any]:
    """Row-major elements of `data`: a flat list, or lists nested exactly as the shape (the protocol allows
    both); any other nesting is refused rather than reshaped."""
    if not isinstance(data, list):
        return [data]
    if not any(isinstance(item, list) for item in data):
        return data
    flat: list[Any] = []
    _flatten_nested(name, data, shape, (), flat)
    return flat


def _flatten_nested(name: str, data: Any, shape: list[int], at: tuple[int, ...], flat: list[Any]) -> None:
    where = "data" + "".join(f"[{index}]" for index in at)
    depth = len(at)
    if depth == len(shape) or not isinstance(data, list) or len(data) != shape[depth]:
        found = f"a list of {len(data)} items" if isinstance(data, list) else describe(data)
        expected = f"a list of {shape[depth]} items" if depth < len(shape) else "a single element"
        raise InferRequestError(
            f"input {name!r}: {where} is {found}; expected {expected} (data is flat, or nested as the shape "
            f"{shape})"
        )
    if depth == len(shape) - 1:
        if any(isinstance(item, list) for item in data):
            index = next(i for i, item in enumerate(data) if isinstance(item, list))
            raise InferRequestError(
                f"input {name!r}: {where}[{index}] is a list; expected a single element (data is flat, or "
                f"nested as the shape {shape})"
            )
        flat.extend(data)
        return
    for index, item in enumerate(data):
        _flatten_nested(name, item, shape, (*at, index), flat)


def _to_float64(name: str, datatype: str, values: np.ndarray) -> np.ndarray:
    """Values of the declared datatype as the float64 array the /attend pipeline reads: FP32 data is rounded
    to float32 first (it is what the client declared), and must stay finite there."""
    if datatype == "FP32":
        with np.errstate(over="ignore"):
            values = values.astype(np.float32)
    if datatype in FLOAT_DATATYPES and not np.isfinite(values).all():
        index = int(np.flatnonzero(~np.isfinite(values.reshape(-1)))[0])
        found = float(values.reshape(-1)[index])
        within = " within FP32 range (about 3.4e38)" if datatype == "FP32" and np.isinf(found) else ""
        raise InferRequestError(
            f"input {name!r}: element {index} is {found}; expected a finite number{within}"
        )
    if datatype == "BOOL" and values.dtype == np.uint8 and (values > 1).any():
        index = int(np.flatnonzero(values.reshape(-1) > 1)[0])
        raise InferRequestError(
            f"input {name!r}: byte {index} of its BOOL data is {values.reshape(-1)[index]}; expected 0 or 1"
        )
    return values.astype(np.float64)


def _from_json(tensor: InferInput, count: int, settings: Settings) -> Decoded:
    if tensor.data is None:
        raise InferRequestError(
            f"input {tensor.name!r} has neither data nor parameters.{BINARY_DATA_SIZE}; expected one of them"
        )
    flat = _flatten(tensor.name, tensor.data, tensor.shape)
    if len(flat) != count:
        raise InferRequestError(
            f"input {tensor.name!r}: found {len(flat)} elements in data; expected {count} for shape "
            f"{tensor.shape}"
        )
    if tensor.datatype == BYTES:
        check_batch(settings, count)
    try:
        _ELEMENTS[tensor.datatype].validate_python(flat)
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        index = first["loc"][0] if first["loc"] else 0
        raise InferRequestError(
            f"input {tensor.name!r}: data element {index} is {describe(first['input'])}; expected "
            f"{'a string' if tensor.datatype == BYTES else 'a finite number'} for {tensor.datatype}"
        ) from None
    if tensor.datatype == BYTES:
        return list(flat)
    values = np.asarray(flat, dtype=np.float64 if tensor.datatype in FLOAT_DATATYPES else np.int64)
    return _to_float64(tensor.name, tensor.datatype, values).reshape(tensor.shape)


def _texts_from_binary(tensor: InferInput, count: int, data: memoryview, settings: Settings) -> list[str]:
    """BYTES elements: each a 4-byte little-endian length, then that many bytes (UTF-8 here)."""
    check_batch(settings, count)
    texts: list[str] = []
    position = 0
    while position < len(data):
        if len(data) - position < 4:
            raise InferRequestError(
                f"input {tensor.name!r}: {len(data) - position} byte(s) left at offset {position} of its "
                "binary data; expected a 4-byte length"
            )
        length = int.from_bytes(data[position : position + 4], "little")
        position += 4
        if length > len(data) - position:
            raise InferRequestError(
                f"input {tensor.name!r}: element {len(texts)} declares {length} bytes but only "
                f"{len(data) - position} remain in its binary data"
            )
        if len(texts) == count:
            raise InferRequestError(
                f"input {tensor.name!r}: its binary data holds more than {count} element(s)"
            )
        try:
            texts.append(str(data[position : position + length], "utf-8"))
        except UnicodeDecodeError:
            raise InferRequestError(
                f"input {tensor.name!r}: element {len(texts)} is not valid UTF-8"
            ) from None
        position += length
    if len(texts) != count:
        raise InferRequestError(
            f"input {tensor.name!r}: found {len(texts)} element(s) in its binary data; expected {count} for "
            f"shape {tensor.shape}"
        )
    return texts


def _from_binary(tensor: InferInput, count: int, data: memoryview, settings: Settings) -> Decoded:
    if tensor.datatype == BYTES:
        return _texts_from_binary(tensor, count, data, settings)
    dtype = np.dtype(NUMERIC_DATATYPES[tensor.datatype])
    if len(data) != count * dtype.itemsize:
        raise InferRequestError(
            f"input {tensor.name!r}: parameters.{BINARY_DATA_SIZE} is {len(data)}; expected {count} "
            f"elements x {dtype.itemsize} bytes = {count * dtype.itemsize} for shape {tensor.shape} "
            f"and {tensor.datatype}"
        )
    values = np.frombuffer(data, dtype=dtype, count=count)  # a view of the body: copied once, just below
    return _to_float64(tensor.name, tensor.datatype, values).reshape(tensor.shape)


def decode_inputs(inputs: list[InferInput], binary: memoryview, settings: Settings) -> dict[str, Decoded]:
    """Each input by name. `binary` is the body after the JSON header: the inputs' binary data in the order
    of `inputs`, adding up to exactly its length."""
    decoded: dict[str, Decoded] = {}
    offset = 0
    for tensor in inputs:
        if tensor.name in decoded:
            raise InferRequestError(f"input {tensor.name!r} is given twice")
        allowed = input_datatypes(tensor.name)
        if tensor.datatype not in allowed:
            raise InferRequestError(
                f"input {tensor.name!r}: found datatype {describe(tensor.datatype)}; expected "
                f"{' or '.join(allowed)}"
            )
        if tensor.name == TEXT_INPUT and len(tensor.shape) != 1:
            raise InferRequestError(
                f"input {TEXT_INPUT!r}: found shape {tensor.shape}; expected [n], one element per text"
            )
        count = _element_count(tensor)
        size = _binary_size(tensor)
        if size is None:
            decoded[tensor.name] = _from_json(tensor, count, settings)
            continue
        left = len(binary) - offset
        if size > left:
            raise InferRequestError(
                f"input {tensor.name!r}: parameters.{BINARY_DATA_SIZE} is {size} but only {left} byte(s) of "
                "binary data remain after the JSON header and the inputs before it"
            )
        decoded[tensor.name] = _from_binary(tensor, count, binary[offset : offset + size], settings)
        offset += size
    if offset != len(binary):
        raise InferRequestError(
            f"found {len(binary) - offset} byte(s) after the JSON header beyond the inputs' "
            f"parameters.{BINARY_DATA_SIZE}; expected the sizes to add up to the {len(binary)} bytes there"
        )
    return decoded
