"""application/x-safetensors: the response as a safetensors file. Top-level tensors by their names, a model's
layers as `layers.{i}.{name}`; `__metadata__` holds `meta` and `tokens` as JSON strings. Masked entries are
-inf; the values are those JSON carries before `decimals` (which does not apply here)."""

from __future__ import annotations

import numpy as np
import orjson
from torch import Tensor

from service.compute.formats.result import Result
from service.compute.formats.safetensors_file import safetensors_bytes
from service.compute.formats.wire import wire_arrays


def safetensors_body(result: Result) -> bytes:
    """A model's top-level sections as `{section}.{name}` (`output_similarity` by itself); their strings
    (`predictions.top_tokens`) in `__metadata__` as JSON, like `tokens`."""
    result = result.settled()
    arrays: dict[str, np.ndarray] = dict(wire_arrays(result.tensors, result.wire_dtype))
    if result.layers is not None:
        for index, tensors in result.layers_in_order():
            on_wire = wire_arrays(tensors, result.wire_dtype, f"layer {index}'s ")
            arrays |= {f"layers.{index}.{name}": array for name, array in on_wire.items()}
    metadata: dict[str, str] = {}
    for section, value in (result.sections() if result.sections is not None else {}).items():
        named = (
            {f"{section}.{k}": v for k, v in value.items()} if isinstance(value, dict) else {section: value}
        )
        tensors = {name: v for name, v in named.items() if isinstance(v, Tensor)}
        arrays |= wire_arrays(tensors, result.wire_dtype)
        metadata |= {name: orjson.dumps(v).decode() for name, v in named.items() if name not in tensors}
    metadata["meta"] = result.meta(wire_dtype=result.wire_dtype).decode()
    if result.tokens is not None:
        metadata["tokens"] = orjson.dumps(result.tokens).decode()
    return safetensors_bytes(arrays, metadata)
