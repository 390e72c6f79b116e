"""Step 4 of a request: tensors to JSON bytes, straight from their memory (orjson reads numpy arrays in C).

Non-finite values (-inf at masked scores, overflow in half precision) become null, since JSON has no inf.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import orjson
import torch

NUMPY_DTYPES = {torch.float32: np.float32, torch.float64: np.float64}


def host_arrays(tensors: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """numpy views of CPU float32/float64 tensors (no copy, no torch call that releases the GIL); otherwise
    all tensors packed into one buffer and moved to host memory in one copy, float16/bfloat16 widened to
    float32 exactly (numpy has no bfloat16, orjson no float16)."""
    if all(t.device.type == "cpu" and t.dtype in NUMPY_DTYPES for t in tensors.values()):
        return {name: tensor.numpy() for name, tensor in tensors.items()}
    flat = torch.cat([tensor.reshape(-1) for tensor in tensors.values()])  # [total]
    buffer = flat.to(device="cpu", dtype=flat.dtype if flat.dtype in NUMPY_DTYPES else torch.float32).numpy()
    arrays, offset = {}, 0
    for name, tensor in tensors.items():
        arrays[name] = buffer[offset : offset + tensor.numel()].reshape(tensor.shape)
        offset += tensor.numel()
    return arrays


def encode(tensors: dict[str, torch.Tensor], decimals: int | None, meta: dict[str, Any], started: float) -> bytes:
    """The response object: the tensors, then `meta`, whose elapsed_ms counts everything since `started`
    up to the end of encoding the tensors (which also waits for a GPU to finish)."""
    arrays = host_arrays(tensors) if tensors else {}
    if decimals is not None:
        arrays = {name: np.round(array, decimals) for name, array in arrays.items()}
    contiguous = {name: np.ascontiguousarray(array) for name, array in arrays.items()}  # as orjson needs
    tensor_json = orjson.dumps(contiguous, option=orjson.OPT_SERIALIZE_NUMPY)  # b'{...}'
    meta["elapsed_ms"] = round((time.perf_counter() - started) * 1000, 3)
    separator = b"," if arrays else b""
    return tensor_json[:-1] + separator + b'"meta":' + orjson.dumps(meta) + b"}"
