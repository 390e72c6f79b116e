"""Where and in what precision a request computes: its device and dtype, and moving arrays there."""

from __future__ import annotations

import functools
from collections.abc import Iterable

import numpy as np
import torch

from service.errors import RequestError

DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}
NUMPY_DTYPES = {torch.float32: np.float32, torch.float64: np.float64}
DTYPE_NAMES = {dtype: name for name, dtype in DTYPES.items()}
# inputs of at most this many numbers in all are range-checked together, in one copy (a small request's numpy
# calls cost more than its numbers: issue 26)
SMALL_INPUTS = 1 << 16


def wider_dtypes(dtype: torch.dtype) -> str:
    """What to suggest when a dtype overflows: the wider dtypes, or scaling down when there is none."""
    if dtype == torch.float64:
        return "float64 is the widest dtype: scale the inputs down"
    wider = "float64" if dtype == torch.float32 else "float32 or float64"
    return f"ask for a wider dtype ({wider}) or scale the inputs down"


def check_range(
    dtype: torch.dtype, values: Iterable[tuple[tuple[str, ...], np.ndarray | float | None]]
) -> None:
    """Each value (a field's location and its array or number) within the dtype's finite range, else a 422
    naming the field, the value and the range. float64 holds every number JSON parsing lets through."""
    if dtype == torch.float64:
        return
    largest = torch.finfo(dtype).max
    given = [(loc, np.asarray(value)) for loc, value in values if value is not None]
    if sum(array.size for _, array in given) <= SMALL_INPUTS:  # one pass over them all: two numpy calls
        every = np.concatenate([array for _, array in given], axis=None) if given else np.zeros(0)
        if every.size == 0 or (every.max() <= largest and every.min() >= -largest):
            return
    for loc, array in given:  # which field is out of range, and where
        if array.size == 0 or (array.max() <= largest and array.min() >= -largest):
            continue
        flat = int(np.abs(array).argmax())
        where = f" at {[int(i) for i in np.unravel_index(flat, array.shape)]}" if array.ndim else ""
        raise RequestError(
            loc,
            f"found {array.flat[flat]:g}{where}, outside the range of {DTYPE_NAMES[dtype]} "
            f"(magnitudes up to {largest:g}); {wider_dtypes(dtype)}",
        )


# a process's devices do not change: torch.cuda.is_available once, not per small request (issue 26)
@functools.cache
def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise RequestError(
            ("device",), "found 'cuda', but this server has no CUDA device; expected 'auto' or 'cpu'"
        )
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


@functools.cache
def device_name(device: torch.device) -> str:
    """As meta reports it: "cpu" or "cuda:0"."""
    return str(device) if device.type == "cpu" else f"{device.type}:{device.index or 0}"


class Converter:
    """Moves arrays and tensors to one device and dtype, casting in numpy where it can (a torch call fewer,
    which matters for small requests: each torch call costs microseconds of dispatch)."""

    def __init__(self, device: torch.device, dtype: torch.dtype):
        self.device, self.dtype = device, dtype

    @classmethod
    def for_request(cls, device: str, dtype: str) -> Converter:
        return cls(resolve_device(device), DTYPES[dtype])

    def __call__(self, array: np.ndarray | torch.Tensor) -> torch.Tensor:
        if isinstance(array, np.ndarray):
            array = torch.from_numpy(array.astype(NUMPY_DTYPES.get(self.dtype, np.float64), copy=False))
        if (array.dtype, array.device) == (self.dtype, self.device):
            return array
        return array.to(device=self.device, dtype=self.dtype)
