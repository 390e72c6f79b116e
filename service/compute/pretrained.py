"""The pretrained path: text through a model. Tokens, then sizes and limits, then the model's forward pass
with the service's attention (service/compute/models/forward.py), keeping the internals of the layers asked
for."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial

from schemas.axes import ROTARY_TENSOR_NAMES
from schemas.request import TOY_MODEL, AttendRequest
from service.compute.attention import attention_on
from service.compute.device import Converter, check_range
from service.compute.formats.result import Layer, Result
from service.compute.formats.wire import wire_dtype_of
from service.compute.limits import check_limits
from service.compute.meta import build_meta
from service.compute.models.registry import LoadedModel, ModelRegistry
from service.compute.models.tokenizer import tokenize
from service.compute.sizes import Sizes
from service.compute.slicing import Selection
from service.errors import RequestError
from service.settings import Settings


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
            raise RequestError(
                ("layer",),
                f"found layer {index}; the model {model.name!r} has layers 0 to {model.num_layers - 1}",
            )
    return layers


def _check_head_sizes(request: AttendRequest, model: LoadedModel) -> None:
    """num_heads, d_k and d_v are the model's: a request may leave them out (or null) or repeat them, not
    change them."""
    d_head = model.forward.d_head
    for name, value in (("num_heads", model.num_heads), ("d_k", d_head), ("d_v", d_head)):
        if getattr(request, name) not in (None, value):
            raise RequestError(
                (name,),
                f"found {name} {getattr(request, name)}; the model {model.name!r} has {name} {value} "
                "(leave it out)",
            )


def _check_rotary_names(request: AttendRequest, model: LoadedModel) -> None:
    asked = [name for name in ROTARY_TENSOR_NAMES if name in request.returned]
    if asked and not model.forward.rotary:
        raise RequestError(
            ("include",),
            f"found {', '.join(asked)}; the model {model.name!r} has {model.forward.positions} positions, "
            "no rotary embedding, so q and k are its projections (ask for q and k)",
        )


def attend_pretrained(
    request: AttendRequest, settings: Settings, models: ModelRegistry, started: float, streamed: bool = False
) -> Result:
    """The forward runs as the model does (its dtype and device, its scale, its causality, window and
    cap); a request that asks otherwise gets its layers' internals from a second attention over the same
    attention inputs, with the model's own mask and rotation. The layers are computed as the result's
    `layers` are read (a stream reads and sends one at a time)."""
    model = _model(models, request.model or settings.default_model)
    layers = _layers(request, model)
    _check_head_sizes(request, model)
    _check_rotary_names(request, model)
    encoded = tokenize(request, model, settings)
    batch, seq = encoded.input_ids.shape
    forward = model.forward
    sizes = Sizes(
        batch,
        seq,
        seq,
        model.d_model,
        model.num_heads,
        forward.d_head,
        forward.d_head,
        model.d_model,
        layers=len(layers),
        kv_heads=forward.num_kv_heads,
    )
    selection = Selection.of(request, sizes)
    check_limits(settings, sizes, request.returned, selection, streamed)
    convert = Converter.for_request(request.device, request.dtype)
    check_range(convert.dtype, [(("scale",), request.scale)])
    scale = request.scale if request.scale is not None else forward.scale
    causal = request.causal or forward.causal
    padded = not bool(encoded.attention_mask.all())
    key_mask = encoded.attention_mask.bool() if padded else None
    as_the_model_does = (convert.device, convert.dtype, scale, causal) == (
        forward.native.device,
        forward.native.dtype,
        forward.scale,
        forward.causal,
    )
    pre_rotary = any(name in request.returned for name in ROTARY_TENSOR_NAMES)

    def computed() -> Iterator[Layer]:
        """Each requested layer once, as the forward pass reaches it."""
        steps = forward.layers(
            encoded.input_ids, key_mask, last=max(layers), pre_rotary=pre_rotary, keep=layers, lazily=streamed
        )
        for step in steps:
            if step.layer not in layers:
                continue
            internals = (
                step.internals
                if as_the_model_does
                else attention_on(
                    convert,
                    step.attention_input,
                    step.attention_input,
                    step.attention_input,
                    step.projections,
                    sizes.num_heads,
                    scale,
                    request.causal,
                    None,  # the padding is in the model's own mask
                    layer=step.layer,
                    num_kv_heads=forward.num_kv_heads,
                    rotary=step.rotary,
                    softcap=forward.softcap,
                    model_allowed=step.allowed,
                )
            )
            yield step.layer, {n: selection.cut(n, getattr(internals, n)) for n in request.returned}
            del step, internals  # not held while the next layer is computed

    windows = [forward.windows[index] for index in layers]
    windowed = any(window is not None for window in forward.windows)
    about = {
        "weights_source": "model",
        "layout": None,
        "init": None,
        "seed": None,
        "output_projection": True,
        "model": model.name,
        "model_revision": model.hub["revision"] if model.hub else None,
        "layer": layers,
        "causal": causal,
        "masked": padded or causal or any(window is not None for window in windows),
        "padded": padded,
        "lengths": encoded.lengths,
        "truncated": encoded.truncated,
        "sliding_window": windows if windowed else None,
        "softcap": forward.softcap,
        "positions": forward.positions,
    }
    return Result(
        tensors={},
        layers=computed(),
        order=layers,
        tokens=encoded.tokens,
        meta=partial(build_meta, request, sizes, scale, convert.device, started, selection, **about),
        decimals=request.decimals,
        wire_dtype=wire_dtype_of(request.wire_dtype, request.dtype),
    )
