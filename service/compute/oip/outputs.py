"""The response of an Open Inference Protocol infer request: the computed tensors as output tensors, JSON or
binary (the binary tensor extension), `tokens` as BYTES, `meta` as a JSON string in the response's
parameters; a model's predictions as outputs `predictions.top_probs`, ... (`predictions.top_tokens` as BYTES)
and `output_similarity`, when no `outputs` are requested.

Binary outputs carry the computed values bit for bit, masked entries as -inf; JSON outputs carry them as
numbers, masked entries as null (JSON has no -inf), rounded to `decimals` when it is given."""

from __future__ import annotations

import struct
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
from torch import Tensor

from schemas.oip import BINARY_DATA_SIZE, BYTES, MODEL_VERSION, TOKENS, layer_output
from service.compute.encoding import rounded
from service.compute.formats.result import Result
from service.compute.formats.wire import wire_arrays
from service.compute.oip.request import Output
from service.protocol import OIP_ANSWER

_LENGTH = struct.Struct("<I")  # a BYTES element's length prefix
DATATYPES = {2: "FP16", 4: "FP32", 8: "FP64"}  # the wire dtypes' (formats/wire.py), by their width


def _sections(result: Result) -> Iterator[tuple[str, np.ndarray | list[Any]]]:
    """A model's top-level sections as outputs `{section}.{name}` (`output_similarity` by itself): tensors on
    the host in the wire dtype, the top tokens as strings."""
    for section, value in (result.sections() if result.sections is not None else {}).items():
        named = (
            {f"{section}.{k}": v for k, v in value.items()} if isinstance(value, dict) else {section: value}
        )
        yield from wire_arrays(
            {k: v for k, v in named.items() if isinstance(v, Tensor)}, result.wire_dtype
        ).items()
        yield from ((k, v) for k, v in named.items() if isinstance(v, list))


def _named_tensors(result: Result) -> Iterator[tuple[str, np.ndarray]]:
    """Every computed tensor by its output name, on the host in the wire dtype: one copy from the device per
    layer."""
    yield from wire_arrays(result.tensors, result.wire_dtype).items()
    if result.layers is not None:
        for index, tensors in result.layers_in_order():
            for name, array in wire_arrays(tensors, result.wire_dtype, f"layer {index}'s ").items():
                yield layer_output(index, name), array


def _tokens_binary(tokens: list[str]) -> bytes:
    parts: list[bytes] = []
    for token in (token.encode() for token in tokens):
        parts += (_LENGTH.pack(len(token)), token)
    return b"".join(parts)


def oip_body(
    result: Result, model: str, request_id: str | None, outputs: list[Output] | None, binary_default: bool
) -> bytes:
    """The infer response to what service.compute.dispatch.compute computed: `outputs` in their order
    (None: every tensor computed, then tokens, each binary if `binary_default`), tensors in the request's
    wire_dtype (FP32 by default, FP64 for a float64 computation)."""
    result = result.settled()
    decimals = result.decimals
    values: dict[str, np.ndarray | list[Any]] = dict(_named_tensors(result))
    values |= dict(_sections(result))
    # tokens: rows padded to the longest with "" (no token is empty), a [batch, seq] tensor
    if result.tokens is not None:
        rows = result.tokens
        seq = max(len(row) for row in rows)
        values[TOKENS] = [row + [""] * (seq - len(row)) for row in rows]
    wanted = outputs if outputs is not None else [Output(name, binary_default) for name in values]
    described: list[dict[str, Any]] = []
    buffers: list[bytes | memoryview] = []
    for name, binary in wanted:
        value = values[name]
        entry: dict[str, Any] = {"name": name}
        if isinstance(value, list):  # tokens [batch][seq], a section's top tokens [batch][position][rank]
            strings = np.array(value, dtype=object)
            flat: list[str] = strings.reshape(-1).tolist()
            entry |= {"datatype": BYTES, "shape": list(strings.shape)}
            if binary:
                buffers.append(_tokens_binary(flat))
                entry["parameters"] = {BINARY_DATA_SIZE: len(buffers[-1])}
            else:
                entry["data"] = flat
        else:
            array = np.ascontiguousarray(value)
            entry |= {
                "datatype": "INT64" if array.dtype.kind == "i" else DATATYPES[array.dtype.itemsize],
                "shape": list(array.shape),
            }
            if binary:  # little-endian, as the protocol sends it (a no-op on every host torch runs on)
                little = array.astype(array.dtype.newbyteorder("<"), copy=False)
                data = memoryview(little.data).cast("B")
                buffers.append(data)
                entry["parameters"] = {BINARY_DATA_SIZE: len(data)}
            else:
                entry["data"] = (rounded(array, decimals) if decimals is not None else array).reshape(-1)
        described.append(entry)
    header = {
        "model_name": model,
        "model_version": MODEL_VERSION,
        "id": request_id if request_id is not None else uuid.uuid4().hex,  # some clients require one
        "parameters": {"meta": result.meta(wire_dtype=result.wire_dtype).decode()},
        "outputs": described,
    }
    header_json = orjson.dumps(header, option=orjson.OPT_SERIALIZE_NUMPY)
    return b"".join((OIP_ANSWER.pack(len(header_json)), header_json, *buffers))
