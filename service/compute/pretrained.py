"""The pretrained path: text through a model. Tokens, then sizes and limits, then the model's forward pass
with the service's attention (service/compute/models/forward.py), keeping the internals of the layers asked
for."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import Any

from torch import Tensor

from schemas.axes import FLOW_TENSOR_NAMES, ROTARY_TENSOR_NAMES, TensorName
from schemas.describe import describe
from schemas.request import TOY_MODEL, AttendRequest
from service.compute.attention import AttentionInternals, attention_on
from service.compute.blocked import BlockedInternals, Visibility
from service.compute.device import Converter, check_range
from service.compute.effects import Effects
from service.compute.formats.result import Layer, Result
from service.compute.formats.wire import wire_dtype_of
from service.compute.generation import Generation, check_generation
from service.compute.limits import check_limits, check_value_zeroing
from service.compute.meta import build_meta, returned_shapes
from service.compute.models.flow import (
    Flow,
    flow_elements,
    mlp_width,
    value_zeroing_chunk,
    value_zeroing_work,
)
from service.compute.models.forward import LayerPass, Summarize
from service.compute.models.registry import LoadedModel, ModelRegistry
from service.compute.models.tokenizer import Encoded, tokenize
from service.compute.predictions import target_ids
from service.compute.sizes import Sizes
from service.compute.slicing import Selection
from service.compute.summaries import SummaryReducer
from service.compute.summarized import asked_summaries, blocked_on, reduce_whole, summary_sizes
from service.errors import RequestError
from service.settings import Settings


def _model(models: ModelRegistry, name: str) -> LoadedModel:
    try:
        return models.get(name)
    except KeyError:
        known = ", ".join([*models.folders, TOY_MODEL])
        raise RequestError(("model",), f"found {describe(name)}; expected one of: {known}") from None


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
    `layers` are read (a stream reads and sends one at a time). With `generate` the texts are first
    extended (a stream sends each generated token as it comes, then the rest)."""
    model = _model(models, request.model or settings.default_model)
    layers = _layers(request, model)
    _check_head_sizes(request, model)
    _check_rotary_names(request, model)
    masked_lm = request.predict is not None and model.lm_head is not None and model.lm_head.kind == "masked"
    encoded = tokenize(request, model, settings, mask_token=masked_lm)
    if request.generate is None:
        return _internals(request, settings, model, layers, encoded, started, streamed)
    if request.interventions is not None:
        raise RequestError(
            ("interventions",),
            "found interventions with generate; expected one of them: generate first, then send the "
            "generated text with interventions",
        )
    longest = check_generation(model, encoded, request.generate.max_new_tokens)
    if request.predict is not None:  # its targets before generating: a stream's error would come after it
        target_ids(request.predict, model)
    _check_sizes(request, settings, model, layers, len(encoded.lengths), longest, streamed)
    generation = Generation(model, encoded, request.generate.max_new_tokens)

    def then() -> Result:
        grown = generation.encoded()
        about = {"prompt_lengths": encoded.lengths, "generated": generation.generated}
        return _internals(request, settings, model, layers, grown, started, streamed, about)

    if streamed:
        return Result.deferred(({"generated": event} for event in generation.tokens()), then)
    for _ in generation.tokens():
        pass
    return then()


def _sizes(model: LoadedModel, layers: list[int], batch: int, seq: int) -> Sizes:
    forward = model.forward
    return Sizes(
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


def _check_sizes(
    request: AttendRequest,
    settings: Settings,
    model: LoadedModel,
    layers: list[int],
    batch: int,
    seq: int,
    streamed: bool,
) -> tuple[Sizes, Selection]:
    sizes = summary_sizes(_sizes(model, layers, batch, seq), request)
    selection = Selection.of(request, sizes)
    mlp = mlp_width(model.forward.model.config)
    flowing = any(name in request.returned for name in FLOW_TENSOR_NAMES)
    if "value_zeroing" in request.returned:
        if request.interventions is not None:
            raise RequestError(
                ("include",),
                "found value_zeroing with interventions; expected one of them: value zeroing reruns each "
                "layer of the clean model",
            )
        check_value_zeroing(settings, value_zeroing_work(sizes, mlp))
    check_limits(
        settings,
        sizes,
        request.returned,
        selection,
        streamed,
        request.blocked,
        # the rollout of layer l needs the weights of layers 0..l: held together unless streamed
        held_layers=max(layers) + 1 if "rollout" in request.returned else None,
        also_held=flow_elements(sizes, request.returned, mlp, streamed) if flowing else 0,
    )
    return sizes, selection


def _internals(
    request: AttendRequest,
    settings: Settings,
    model: LoadedModel,
    layers: list[int],
    encoded: Encoded,
    started: float,
    streamed: bool,
    generated: dict[str, list[int]] | None = None,
) -> Result:
    """The layers' internals (and the predictions and interventions' effects) over these tokens."""
    batch, seq = encoded.input_ids.shape
    forward = model.forward
    sizes, selection = _check_sizes(request, settings, model, layers, batch, seq, streamed)
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
    unlike = None
    if not as_the_model_does:
        requested = f"device {convert.device}, dtype {convert.dtype}, scale {scale:g}, causal {causal}"
        native = forward.native
        runs = (
            f"device {native.device}, dtype {native.dtype}, scale {forward.scale:g}, causal {forward.causal}"
        )
        unlike = f"{requested}, while the model {model.name!r} runs with {runs}"
    effects = Effects.of(request, model, encoded, key_mask, settings, unlike)
    asked = asked_summaries(request, sizes)
    token_ids = encoded.input_ids

    def reducer(like: Tensor) -> SummaryReducer:
        return SummaryReducer(asked, batch, sizes.num_heads, seq, seq, like, key_mask, key_mask, token_ids)

    def recomputed_blocked(step: LayerPass) -> BlockedInternals:
        """A layer of a pass that summarized, at the request's dtype, scale or causality."""
        return blocked_on(
            convert,
            step.attention_input,
            step.attention_input,
            step.attention_input,
            step.projections,
            sizes.num_heads,
            scale,
            asked,
            Visibility(None, request.causal, seq, own=step.row_mask),
            key_mask,
            key_mask,
            token_ids,
            num_kv_heads=forward.num_kv_heads,
            rotary=step.rotary,
            softcap=forward.softcap,
            pre_rotary=pre_rotary,
            where=f"layer {step.layer}: ",
        )

    def tensors(step: LayerPass, internals: AttentionInternals | BlockedInternals) -> dict[str, Tensor]:
        if isinstance(internals, BlockedInternals):
            return {n: selection.cut(n, internals.tensor(n)) for n in request.returned}
        found: dict[TensorName, Tensor] = flow.tensors(step, internals)
        if asked.names:
            found |= reduce_whole(internals.weights, asked, key_mask, key_mask, token_ids)
        return {
            n: selection.cut(n, found[n] if n in found else getattr(internals, n)) for n in request.returned
        }

    summarize = Summarize(reducer if as_the_model_does else None) if request.blocked else None
    flow = Flow(request.returned, key_mask, value_zeroing_chunk(sizes, mlp_width(forward.model.config)))

    def computed() -> Iterator[Layer]:
        """Each requested layer once, as the forward pass reaches it."""
        if effects is not None and effects.runs_alone(request.returned):  # no layer's internals asked
            effects.run_alone()
            yield from ((layer, {}) for layer in layers)
            return
        steps = forward.layers(
            encoded.input_ids,
            key_mask,
            last=max(layers),
            pre_rotary=pre_rotary,
            keep=None if flow.every_layer else layers,
            lazily=streamed or request.blocked,  # blocked: one layer's q, k, v held at a time, not all
            whole=None if effects is None else effects.whole,
            summarize=summarize,
            blocks=layers if flow.block_calls else (),
        )
        for step in steps:
            internals: AttentionInternals | BlockedInternals = (
                step.internals
                if as_the_model_does
                else recomputed_blocked(step)
                if request.blocked
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
            if isinstance(internals, AttentionInternals):  # the flow names are n x n: never in blocks
                flow.step(internals)
            if step.layer not in layers:
                continue
            yield step.layer, tensors(step, internals)
            del step, internals  # not held while the next layer is computed

    windows = [forward.windows[index] for index in layers]
    windowed = any(window is not None for window in forward.windows)
    about: dict[str, Any] = {
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
        **(generated or {}),
    }
    if effects is not None:
        extra = effects.axes(batch, seq)
        about |= {"predicted_positions": effects.plan.positions if effects.plan else None, **extra}
    return Result(
        tensors={},
        layers=computed(),
        order=layers,
        tokens=encoded.tokens,
        meta=partial(build_meta, request, sizes, scale, convert.device, started, selection, **about),
        decimals=request.decimals,
        wire_dtype=wire_dtype_of(request.wire_dtype, request.dtype),
        sections=None if effects is None else effects.sections,
        shapes=partial(returned_shapes, request, sizes, selection, about.get("shapes")),
    )
