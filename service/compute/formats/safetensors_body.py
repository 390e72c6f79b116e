"""application/x-safetensors: the response as a safetensors file. Top-level tensors by their names, a model's
layers as `layers.{i}.{name}`; `__metadata__` holds `meta` and `tokens` as JSON strings. Masked entries are
-inf; the values are those JSON carries before `decimals` (which does not apply here)."""

from __future__ import annotations

import numpy as np
import orjson

from service.compute.formats.result import Result
from service.compute.formats.safetensors_file import safetensors_bytes
from service.compute.formats.wire import wire_arrays


def safetensors_body(result: Result) -> bytes:
    arrays: dict[str, np.ndarray] = dict(wire_arrays(result.tensors, result.wire_dtype))
    if result.layers is not None:
        for index, tensors in result.layers_in_order():
            on_wire = wire_arrays(tensors, result.wire_dtype, f"layer {index}'s ")
            arrays |= {f"layers.{index}.{name}": array for name, array in on_wire.items()}
    metadata = {"meta": result.meta(wire_dtype=result.wire_dtype).decode()}
    if result.tokens is not None:
        metadata["tokens"] = orjson.dumps(result.tokens).decode()
    return safetensors_bytes(arrays, metadata)
