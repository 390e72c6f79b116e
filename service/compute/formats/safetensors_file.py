"""A safetensors file (https://huggingface.co/docs/safetensors) written straight from numpy arrays: an
8-byte little-endian header length, the JSON header (each tensor's dtype, shape and byte range, and
`__metadata__`, strings only), padded with spaces to 8 bytes, then every tensor's bytes in order. One copy of
the data, into the returned bytes."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import orjson

DTYPE_CODES = {np.dtype("<f4"): "F32", np.dtype("<f2"): "F16", np.dtype("<f8"): "F64", np.dtype("<i8"): "I64"}
ALIGNMENT = 8  # the data starts at a multiple of 8 bytes, so that readers can map it as float64 in place


def safetensors_bytes(arrays: dict[str, np.ndarray], metadata: dict[str, str]) -> bytes:
    """The file of `arrays` (C-contiguous, little-endian, of a dtype in DTYPE_CODES) with `metadata`."""
    header: dict[str, Any] = {"__metadata__": metadata}
    offset = 0
    for name, array in arrays.items():
        end = offset + array.nbytes
        header[name] = {
            "dtype": DTYPE_CODES[array.dtype],
            "shape": list(array.shape),
            "data_offsets": [offset, end],
        }
        offset = end
    head = orjson.dumps(header)
    head += b" " * (-len(head) % ALIGNMENT)
    data = [array.reshape(-1).view(np.uint8).data for array in arrays.values()]
    return b"".join([struct.pack("<Q", len(head)), head, *data])
