"""One request from bytes to bytes: schema -> inputs -> weights -> limits -> attention -> encoding.

Runs in a worker thread (see routes/attend.py): parsing, torch work and encoding never touch the event loop.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch

from schemas.request import AttendRequest
from schemas.response import TENSOR_AXES
from service.attention import MultiHeadAttention, allowed_positions
from service.encoding import NUMPY_DTYPES, encode
from service.errors import RequestError
from service.inputs import Inputs, resolve_inputs
from service.limits import check_limits, tensor_shapes
from service.settings import Settings
from service.weights import Dims, resolve_dims, resolve_weights

DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise RequestError(("device",), "found 'cuda', but this server has no CUDA device; expected 'auto' or 'cpu'")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def _meta(request: AttendRequest, inputs: Inputs, dims: Dims, scale: float, device: torch.device) -> dict[str, Any]:
    spec = request.weights
    source = "none" if inputs.value is not None else ("explicit" if spec is not None and spec.explicit else "generated")
    shapes = tensor_shapes(inputs, dims)
    return {
        "device": str(device) if device.type == "cpu" else f"{device.type}:{device.index or 0}",
        "dtype": request.dtype,
        "scale": scale,
        "num_heads": dims.num_heads,
        "d_k": dims.d_k,
        "d_v": dims.d_v,
        "d_model": inputs.d_model,
        "d_out": dims.d_out,
        "batch": inputs.batch,
        "seq": inputs.seq,
        "seq_kv": inputs.seq_kv,
        "causal": request.causal,
        "masked": request.causal or (inputs.key_mask is not None and not inputs.key_mask.all()),
        "weights_source": source,
        "layout": spec.layout if source == "explicit" else None,
        "init": (spec.init if spec else "xavier_uniform") if source == "generated" else None,
        "seed": (spec.seed if spec else 0) if source == "generated" else None,
        "output_projection": dims.output_projection,
        "model": None,
        "layer": None,
        "torch_version": torch.__version__,
        "decimals": request.decimals,
        "axes": {name: list(TENSOR_AXES[name]) for name in request.returned},
        "shapes": {name: list(shapes[name]) for name in request.returned},
    }


def attend(body: bytes, settings: Settings) -> bytes:
    started = time.perf_counter()
    request = AttendRequest.model_validate_json(body)
    inputs = resolve_inputs(request)
    dims = resolve_dims(request, inputs)
    check_limits(settings, request, inputs, dims)
    device, dtype = resolve_device(request.device), DTYPES[request.dtype]
    projections = resolve_weights(request, inputs, dims)
    scale = request.scale if request.scale is not None else 1.0 / math.sqrt(dims.d_k)

    def on_device(array: np.ndarray | torch.Tensor | None) -> torch.Tensor | None:
        if array is None:
            return None
        if isinstance(array, np.ndarray):  # cast in numpy where it can: one torch call fewer
            array = torch.from_numpy(array.astype(NUMPY_DTYPES.get(dtype, np.float64), copy=False))
        return array if (array.dtype, array.device) == (dtype, device) else array.to(device=device, dtype=dtype)

    module = MultiHeadAttention(dims.num_heads, scale, projections.to(on_device))
    key_mask = None if inputs.key_mask is None else torch.from_numpy(inputs.key_mask).to(device)
    with torch.inference_mode():
        allowed = allowed_positions(key_mask, request.causal, inputs.seq, inputs.seq_kv, device)
        x = on_device(inputs.x)
        source = x if inputs.self_attention else on_device(inputs.source)
        internals = module(x, source, on_device(inputs.value), allowed)
    tensors = {name: getattr(internals, name) for name in request.returned}
    return encode(tensors, request.decimals, _meta(request, inputs, dims, scale, device), started)
