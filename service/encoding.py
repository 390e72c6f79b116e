"""Step 4 of a request: tensors to JSON bytes, straight from their memory (orjson reads numpy arrays in C).

Non-finite values (-inf at masked scores, overflow in half precision) become null, since JSON has no inf.
"""

from __future__ import annotations

import time
from typing import Any, Optional

import numpy as np
import orjson
import torch


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """float16/bfloat16 widen to float32 (exactly), since numpy has no bfloat16 and orjson no float16."""
    tensor = tensor.detach()
    if tensor.dtype in (torch.float16, torch.bfloat16):
        tensor = tensor.float()
    return tensor.cpu().contiguous().numpy()


def encode(tensors: dict[str, torch.Tensor], decimals: Optional[int], meta: dict[str, Any], started: float) -> bytes:
    """The response object: the tensors, then `meta`, whose elapsed_ms counts everything since `started`
    up to the end of encoding the tensors (which also waits for a GPU to finish)."""
    arrays = {name: to_numpy(tensor) for name, tensor in tensors.items()}
    if decimals is not None:
        arrays = {name: np.round(array, decimals) for name, array in arrays.items()}
    tensor_json = orjson.dumps(arrays, option=orjson.OPT_SERIALIZE_NUMPY)  # b'{...}'
    meta["elapsed_ms"] = round((time.perf_counter() - started) * 1000, 3)
    separator = b"," if arrays else b""
    return tensor_json[:-1] + separator + b'"meta":' + orjson.dumps(meta) + b"}"
