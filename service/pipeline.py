"""One request from bytes to bytes: schema -> inputs -> weights -> limits -> attention -> encoding.

Runs in a compute process (service/worker.py): parsing, torch work and encoding never touch the event loop.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch

from schemas.request import TOY_MODEL, AttendRequest
from schemas.response import TENSOR_AXES
from service.attention import AttentionInternals, MultiHeadAttention, allowed_positions
from service.encoding import NUMPY_DTYPES, encode
from service.errors import RequestError
from service.inputs import Inputs, resolve_inputs
from service.limits import check_limits, tensor_shapes
from service.models import LoadedModel, ModelRegistry
from service.settings import Settings
from service.text import Encoded, tokenize, toy_inputs
from service.weights import Dims, Projections, resolve_dims, resolve_weights

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


def _default_scale(dims: Dims) -> float:
    return 1.0 / math.sqrt(dims.d_k)


def _scale(request: AttendRequest, dims: Dims) -> float:
    return request.scale if request.scale is not None else _default_scale(dims)


class Converter:
    """Moves arrays and tensors to the request's device and dtype, casting in numpy where it can (a torch call
    fewer, which matters for small requests: each torch call costs microseconds of dispatch)."""

    def __init__(self, device: torch.device, dtype: torch.dtype):
        self.device, self.dtype = device, dtype

    def __call__(self, array: np.ndarray | torch.Tensor | None) -> torch.Tensor | None:
        if array is None:
            return None
        if isinstance(array, np.ndarray):
            array = torch.from_numpy(array.astype(NUMPY_DTYPES.get(self.dtype, np.float64), copy=False))
        if (array.dtype, array.device) == (self.dtype, self.device):
            return array
        return array.to(device=self.device, dtype=self.dtype)


def _attention(projections: Projections, num_heads: int, scale: float, causal: bool, x, source, value,
               key_mask: np.ndarray | torch.Tensor | None, convert: Converter) -> AttentionInternals:
    module = MultiHeadAttention(num_heads, scale, projections.to(convert))
    if isinstance(key_mask, np.ndarray):
        key_mask = torch.from_numpy(key_mask)
    with torch.inference_mode():
        key_mask = None if key_mask is None else key_mask.to(convert.device)
        allowed = allowed_positions(key_mask, causal, x.shape[1], source.shape[1], convert.device)
        x_on_device = convert(x)
        source_on_device = x_on_device if source is x else convert(source)
        return module(x_on_device, source_on_device, convert(value), allowed)


def _returned(request: AttendRequest, internals: AttentionInternals) -> dict[str, torch.Tensor]:
    return {name: getattr(internals, name) for name in request.returned}


def attend(body: bytes, settings: Settings, models: ModelRegistry) -> bytes:
    started = time.perf_counter()
    request = AttendRequest.model_validate_json(body)
    if request.text is not None and request.model != TOY_MODEL:
        return _attend_pretrained(request, settings, models, started)
    tokens = None
    if request.text is not None:
        inputs, tokens = toy_inputs(request, settings)
    else:
        inputs = resolve_inputs(request)
    dims = resolve_dims(request, inputs)
    check_limits(settings, request, inputs, dims)
    convert = Converter(resolve_device(request.device), DTYPES[request.dtype])
    projections = resolve_weights(request, inputs, dims)
    scale = _scale(request, dims)
    source = inputs.x if inputs.self_attention else inputs.source
    internals = _attention(projections, dims.num_heads, scale, request.causal, inputs.x, source, inputs.value,
                           inputs.key_mask, convert)
    sections: dict[str, Any] = _returned(request, internals)
    meta = _meta(request, inputs, dims, scale, convert.device)
    if tokens is not None:
        sections["tokens"] = tokens
        meta |= {"model": TOY_MODEL, "d_model": inputs.d_model, "lengths": [len(t) for t in tokens]}
    return encode(sections, request.decimals, meta, started)


def _model(models: ModelRegistry, name: str) -> LoadedModel:
    try:
        return models.get(name)
    except KeyError:
        known = ", ".join([*models.folders, TOY_MODEL])
        raise RequestError(("model",), f"found {name!r}; expected one of: {known}") from None


def _layers(request: AttendRequest, model: LoadedModel) -> list[int]:
    layer = "all" if request.layer is None else request.layer
    layers = list(range(model.num_layers)) if layer == "all" else [layer] if isinstance(layer, int) else layer
    if not layers:
        raise RequestError(("layer",), "found an empty list; expected at least one layer")
    for index in layers:
        if not 0 <= index < model.num_layers:
            raise RequestError(("layer",), f"found layer {index}; the model {model.name!r} has layers 0 to "
                                           f"{model.num_layers - 1}")
    return layers


def _pretrained_dims(request: AttendRequest, model: LoadedModel) -> Dims:
    d_head = model.d_model // model.num_heads
    dims = Dims(model.num_heads, d_head, d_head, model.d_model, output_projection=True)
    for name, value in (("num_heads", dims.num_heads), ("d_k", dims.d_k), ("d_v", dims.d_v)):
        if name in request.model_fields_set and getattr(request, name) != value:
            raise RequestError((name,), f"found {name} {getattr(request, name)}; the model {model.name!r} has "
                                        f"{name} {value} (leave it out)")
    return dims


def _attend_pretrained(request: AttendRequest, settings: Settings, models: ModelRegistry, started: float) -> bytes:
    model = _model(models, request.model or settings.default_model)
    layers = _layers(request, model)
    dims = _pretrained_dims(request, model)
    encoded = tokenize(request, model, settings)
    batch, seq = encoded.input_ids.shape
    shape_only = np.broadcast_to(np.float64(0), (batch, seq, model.d_model))  # no memory: limits need shapes
    padded = not bool(encoded.attention_mask.all())
    key_mask = encoded.attention_mask.bool() if padded else None
    inputs = Inputs(x=shape_only, source=shape_only, value=None, key_mask=None, self_attention=True)
    check_limits(settings, request, inputs, dims, layers=len(layers))
    convert = Converter(resolve_device(request.device), DTYPES[request.dtype])
    scale = _scale(request, dims)
    results = _pretrained_layers(request, model, dims, scale, encoded, key_mask, layers, convert)
    meta = _meta(request, inputs, dims, scale, convert.device) | {
        "model": model.name, "layer": layers, "weights_source": "model", "init": None, "seed": None, "padded": padded,
        "masked": padded or request.causal, "d_model": model.d_model,
        "lengths": [len(t) for t in encoded.tokens], "truncated": request.truncate,
    }
    return encode({"layers": results, "tokens": encoded.tokens}, request.decimals, meta, started)


def _pretrained_layers(request: AttendRequest, model: LoadedModel, dims: Dims, scale: float, encoded: Encoded,
                       key_mask: torch.Tensor | None, layers: list[int], convert: Converter) -> list[dict[str, Any]]:
    """The model's forward pass with service/attention.py as its attention, up to the last layer asked for;
    returns the requested internals of each layer in `layers`, in that order. The forward runs as the model does
    (its dtype and device, its scale, not causal); a request that asks otherwise gets its internals from a second
    attention over the same hidden states."""
    native, native_scale = Converter(model.device, model.dtype), _default_scale(dims)
    as_the_model_does = (convert.device, convert.dtype, scale, request.causal) == (
        model.device, model.dtype, native_scale, False)
    asked_for: dict[int, dict[str, Any]] = {}
    with torch.inference_mode():
        hidden = model.embed(encoded.input_ids)  # [batch, seq, d_model], entering layer 0
        for index in range(max(layers) + 1):
            projections = model.projections(index)
            internals = _attention(projections, dims.num_heads, native_scale, False, hidden, hidden, None, key_mask,
                                   native)
            if index in layers:
                asked = internals if as_the_model_does else _attention(
                    projections, dims.num_heads, scale, request.causal, hidden, hidden, None, key_mask, convert)
                asked_for[index] = {"layer": index, **_returned(request, asked)}
            if index < max(layers):
                hidden = model.feed_forward(index, hidden, internals.output)  # entering layer index + 1
    return [asked_for[index] for index in layers]
