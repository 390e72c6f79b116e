"""Tensors as binary formats carry them: little-endian arrays of the wire dtype, whose values are bit for
bit those JSON carries (before `decimals`) when the wire dtype is at least as wide as the computation's."""

from __future__ import annotations

import numpy as np
import torch

from service.compute.encoding import host_arrays
from service.errors import RequestError

WIRE_DTYPES: dict[str, np.dtype[np.floating]] = {
    "float32": np.dtype("<f4"),
    "float16": np.dtype("<f2"),
    "float64": np.dtype("<f8"),
}


def wire_dtype_of(requested: str | None, dtype: str) -> str:
    """The request's wire_dtype, or by default float32 (float64 for a float64 computation, which float32
    would round)."""
    if requested is not None:
        return requested
    return "float64" if dtype == "float64" else "float32"


def to_wire(array: np.ndarray, wire_dtype: str, what: str) -> np.ndarray:
    """`array` as a C-contiguous little-endian array of `wire_dtype`. A narrower type rounds each value to
    its nearest; a finite value past its range would become inf, which means masked: a 422 naming `what`
    (the tensor, and its layer) instead. Integers (key positions) stay int64."""
    if array.dtype.kind in "iu":
        return np.ascontiguousarray(array, dtype="<i8")
    wire = WIRE_DTYPES[wire_dtype]
    with np.errstate(over="ignore"):  # an overflow is found below and refused
        converted: np.ndarray = np.ascontiguousarray(array, dtype=wire)
    if wire.itemsize < array.dtype.itemsize:
        overflowed = np.isinf(converted) & np.isfinite(array)
        if overflowed.any():
            largest = float(np.abs(np.where(overflowed, array, 0)).max())
            raise RequestError(
                ("wire_dtype",),
                f"found {what} with a value of magnitude {largest:g}, past the range of {wire_dtype} "
                f"(magnitudes up to {float(np.finfo(wire).max):g}); ask for wire_dtype float32",
            )
    return converted


def wire_arrays(tensors: dict[str, torch.Tensor], wire_dtype: str, where: str = "") -> dict[str, np.ndarray]:
    """Every tensor of one dict (moved to host memory together) on the wire; `where` prefixes the names in
    error messages (e.g. "layer 3's ")."""
    arrays = host_arrays(tensors) if tensors else {}
    return {name: to_wire(array, wire_dtype, f"{where}{name}") for name, array in arrays.items()}
