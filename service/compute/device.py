"""Where and in what precision a request computes: its device and dtype, and moving arrays there."""

from __future__ import annotations

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


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise RequestError(
            ("device",), "found 'cuda', but this server has no CUDA device; expected 'auto' or 'cpu'"
        )
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


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
