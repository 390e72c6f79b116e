"""A model's own forward pass with the service's attention module as its attention.

transformers lets a registered function stand in for the attention of every family in families.py
(AttentionInterface): it receives the projected and rotated q, un-repeated k and v, the model's mask, its
scaling and soft-cap, and returns the context that the model then projects with its own W_o. The function
registered here computes every internal with service/compute/attention.py, so the hidden states entering
each layer are the model's own, computed with the service's attention. Hooks record each layer's attention
input with its rotary cos and sin (to recompute a layer at a request's dtype, scale or causality) and W_o's
output; the forward stops after the last layer asked for.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from schemas.axes import TensorName
from service.compute.attention import (
    AllowedPositions,
    AttentionInternals,
    HeadInternals,
    Overflow,
    Projections,
    Rotary,
    attend_heads,
    overflowed,
    pre_rotary,
)
from service.compute.blocked import (
    BlockedInternals,
    ModelRowMask,
    WholeMask,
    attend_blocked,
    context_only,
    overflowed_blocked,
)
from service.compute.device import Converter
from service.compute.models.families import Family, LayerParts, head_size, layer_windows, model_scale
from service.compute.models.families import num_kv_heads as kv_heads_of
from service.compute.models.families import softcap as softcap_of
from service.compute.summaries import SummaryReducer

SERVICE_ATTENTION = "attention_service"  # the attn_implementation name the models are loaded with


class LayerPass(NamedTuple):
    """One layer of the forward pass: what its attention received (the hidden states after any norm before
    it, the rotary cos and sin, the model's mask), its weights and scale, and its attention's internals
    (in blocks of queries, with summaries, when the pass was asked to summarize: `row_mask` is then the
    model's mask, built a block of rows at a time, and `allowed` None)."""

    layer: int
    attention_input: Float[Tensor, "batch pos d_model"]
    projections: Projections
    rotary: Rotary | None
    allowed: AllowedPositions | None  # the model's own mask: True = attend
    scale: float
    internals: AttentionInternals | BlockedInternals
    row_mask: ModelRowMask | None = None
    block_call: BlockCall | None = None  # only for the layers `layers(blocks=...)` names


class Summarize(NamedTuple):
    """A forward pass that keeps no [query_pos, key_pos] matrix: its masks are built a block of rows at a
    time, the layers not kept run SDPA, and the kept layers are computed in blocks with `reducer`'s
    summaries (or, when `reducer` is None, run SDPA too and keep their inputs to be recomputed)."""

    reducer: Callable[[Tensor], SummaryReducer] | None


class BlockCall(NamedTuple):
    """How the forward pass called one whole layer (attention, residuals, norms, MLP): the module and its
    arguments (hidden states, masks, position embeddings), to run the layer again (value zeroing)."""

    module: torch.nn.Module
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


class _Attended(NamedTuple):
    q: Tensor
    k: Tensor
    v: Tensor
    heads: HeadInternals | None  # None: computed in blocks
    allowed: AllowedPositions | None
    scale: float
    context: Tensor | None = None  # computed in blocks: the context, and the summaries (if reduced)
    summaries: dict[TensorName, Tensor] | None = None
    row_mask: ModelRowMask | None = None


class AttentionEdit(Protocol):
    """Changes a layer's attention inside the model's forward pass (service/compute/interventions.py): the
    positions each query may attend, before the softmax, and the heads' context, before W_o."""

    def allowed(
        self, layer: int, allowed: AllowedPositions | None, query: Tensor, key: Tensor
    ) -> AllowedPositions | None: ...

    def context(
        self, layer: int, context: Float[Tensor, "batch head query_pos d_v"]
    ) -> Float[Tensor, "batch head query_pos d_v"]: ...


@dataclass
class WholePass:
    """Asks `layers` for the whole forward pass (not only up to the last layer kept), with `edit` in every
    layer's attention; the model's final hidden states (its last_hidden_state) are left in `final`, and how
    the pass called each layer named in `layers(blocks=...)` and not kept in `calls`."""

    edit: AttentionEdit | None = None
    final: Float[Tensor, "batch pos d_model"] | None = None
    calls: dict[int, BlockCall] = field(default_factory=dict)


class _Stop(Exception):
    """Raised by the hook of the last layer asked for: the rest of the forward pass is not needed."""


class _Recording:
    """What one forward pass records, layer by layer, up to layer `last`."""

    def __init__(
        self,
        forward: ModelForward,
        last: int,
        keep: Collection[int],
        pre_rotary: bool,
        whole: WholePass | None = None,
        summarize: Summarize | None = None,
        blocks: Collection[int] = (),
    ):
        self.forward, self.last, self.keep, self.want_pre_rotary = forward, last, keep, pre_rotary
        self.whole, self.summarize = whole, summarize
        self.want_blocks = blocks
        self.blocks: dict[int, BlockCall] = {}
        self.inputs: dict[int, tuple[Tensor, Rotary | None]] = {}
        self.attended: dict[int, _Attended] = {}
        self.passes: list[LayerPass] = []
        self.hand_over: Callable[[LayerPass], None] | None = None  # set: each pass goes there, not to passes

    def record(self, layer_pass: LayerPass) -> None:
        if self.hand_over is None:
            self.passes.append(layer_pass)
        else:
            self.hand_over(layer_pass)

    def layer_pass(self, layer: int, output: Tensor) -> LayerPass:
        x, rotary = self.inputs.pop(layer)
        a = self.attended.pop(layer)
        parts = self.forward.parts[layer]
        q_pre = k_pre = None
        if self.want_pre_rotary and rotary is not None:
            q_pre, k_pre = pre_rotary(x, parts.projections, self.forward.num_heads, self.forward.num_kv_heads)
        internals: AttentionInternals | BlockedInternals
        if a.heads is None:
            assert a.context is not None
            summaries = a.summaries or {}
            internals = BlockedInternals(a.q, a.k, a.v, a.context, output, summaries, q_pre, k_pre)
            tensor = overflowed_blocked(internals)
        else:
            internals = AttentionInternals(a.q, a.k, a.v, *a.heads, output, q_pre, k_pre)
            tensor = overflowed(internals, a.allowed)
        if tensor is not None:
            raise Overflow(tensor, output.dtype, f"layer {layer}: ")
        block_call = self.blocks.pop(layer, None)
        return LayerPass(
            layer, x, parts.projections, rotary, a.allowed, a.scale, internals, a.row_mask, block_call
        )


_RECORDING: ContextVar[_Recording | None] = ContextVar("attention_recording", default=None)
# set while a layer runs again with some of its values changed (value zeroing): what changes them
_VALUE_EDIT: ContextVar[Callable[[Tensor], Tensor] | None] = ContextVar("value_edit", default=None)


@contextmanager
def values_edited(edit: Callable[[Tensor], Tensor]) -> Iterator[None]:
    """Within: the attention function receives `edit(value)` ([batch, kv_head, key_pos, d_v]) as its value,
    and records nothing (a layer run again outside the forward pass of a request)."""
    tokens = _VALUE_EDIT.set(edit), _RECORDING.set(None)
    try:
        yield
    finally:
        _RECORDING.reset(tokens[1])
        _VALUE_EDIT.reset(tokens[0])


def _allowed(mask: Tensor | None, key_pos: int) -> AllowedPositions | None:
    """The model's mask as True = attend: the boolean mask registered below, or an additive one (0 where
    allowed) should a family build its own."""
    if mask is None:
        return None
    mask = mask[..., :key_pos]
    return mask if mask.dtype == torch.bool else mask == 0


def service_attention(
    module: torch.nn.Module,
    query: Float[Tensor, "batch head query_pos d_k"],
    key: Float[Tensor, "batch kv_head key_pos d_k"],
    value: Float[Tensor, "batch kv_head key_pos d_v"],
    attention_mask: Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    softcap: float | None = None,
    **kwargs: Any,
) -> tuple[Float[Tensor, "batch query_pos head d_v"], Float[Tensor, "batch head query_pos key_pos"] | None]:
    """The attention function registered with transformers: the service's attention over the model's q, k,
    v, mask, scaling and soft-cap (eval mode: no dropout). Returns the context in the layout the models
    expect, and the weights (None for a pass that summarizes: see _summarized_attention)."""
    value_edit = _VALUE_EDIT.get()
    if value_edit is not None:
        value = value_edit(value)
    scale = float(scaling) if scaling is not None else query.shape[-1] ** -0.5
    half = query.dtype in (torch.float16, torch.bfloat16)
    recording = _RECORDING.get()
    if recording is not None and recording.summarize is not None:  # an edit only when resumed
        assert attention_mask is None or isinstance(attention_mask, ModelRowMask)
        context = _summarized_attention(recording, module, query, key, value, attention_mask, scale, softcap)
        return context.transpose(1, 2), None
    allowed = _allowed(attention_mask, key.shape[-2])
    edit = None if recording is None or recording.whole is None else recording.whole.edit
    layer = -1 if recording is None else recording.forward.layer_of[id(module)]
    if edit is not None:
        allowed = edit.allowed(layer, allowed, query, key)
    heads = attend_heads(query, key, value, scale, allowed, softcap, torch.float32 if half else None)
    if edit is not None:
        heads = heads._replace(context=edit.context(layer, heads.context))
    if recording is not None:
        recording.attended[layer] = _Attended(query, key, value, heads, allowed, scale)
    return heads.context.transpose(1, 2), heads.weights


def _summarized_attention(
    recording: _Recording,
    module: torch.nn.Module,
    query: Float[Tensor, "batch head query_pos d_k"],
    key: Float[Tensor, "batch kv_head key_pos d_k"],
    value: Float[Tensor, "batch kv_head key_pos d_v"],
    mask: ModelRowMask | None,
    scale: float,
    softcap: float | None,
) -> Float[Tensor, "batch head query_pos d_v"]:
    """A layer of a pass that summarizes: a kept layer in blocks with the summaries (when the pass reduces),
    any other with SDPA; no [query_pos, key_pos] matrix is held."""
    assert recording.summarize is not None
    layer = recording.forward.layer_of[id(module)]
    kept = layer in recording.keep
    half = query.dtype in (torch.float16, torch.bfloat16)
    softmax_dtype = torch.float32 if half else None
    make_reducer = recording.summarize.reducer
    # an edit only in a layer not kept (a pass resumed by service/compute/models/resumed.py keeps none)
    edit = None if kept or recording.whole is None else recording.whole.edit
    knocked = None if edit is None else edit.allowed(layer, None, query, key)
    if kept and make_reducer is not None:
        reducer = make_reducer(query)
        row_mask = mask or WholeMask(None)
        context = attend_blocked(query, key, value, scale, row_mask, reducer, softcap, softmax_dtype)
        summaries = reducer.finish()
    elif knocked is not None:  # a knockout: the model's mask, whole, less the knocked-out pairs
        model_allowed = None if mask is None else mask.rows(0, query.shape[2])
        allowed = knocked if model_allowed is None else model_allowed.to(knocked.device) & knocked
        context = attend_blocked(query, key, value, scale, WholeMask(allowed), None, softcap, softmax_dtype)
        summaries = None
    else:
        context = context_only(query, key, value, scale, mask, softcap, softmax_dtype)
        summaries = None
    if edit is not None:
        context = edit.context(layer, context)
    if kept:
        recording.attended[layer] = _Attended(query, key, value, None, None, scale, context, summaries, mask)
    return context


@contextmanager
def layers_called_alone(forward: ModelForward, whole: WholePass) -> Iterator[None]:
    """Within: the model's layers, called one by one rather than through its forward (a pass resumed by
    service/compute/models/resumed.py), attend as in a pass that summarizes and keeps no layer (SDPA, no
    matrix held), with `whole.edit`."""
    recording = _Recording(forward, len(forward.parts) - 1, (), False, whole, Summarize(None))
    token = _RECORDING.set(recording)
    try:
        yield
    finally:
        _RECORDING.reset(token)


def register() -> None:
    """Registers service_attention, and a mask function that always builds the mask (transformers may skip
    a plain causal mask for SDPA, whose is_causal flag stands in for it; this function needs it)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    sdpa_mask = ALL_MASK_ATTENTION_FUNCTIONS["sdpa"]

    def always_built_mask(*args: Any, **kwargs: Any) -> Any:
        recording = _RECORDING.get()
        if recording is not None and recording.summarize is not None and not args:
            return ModelRowMask(kwargs)  # built a block of rows at a time, never whole
        return sdpa_mask(*args, **{**kwargs, "allow_is_causal_skip": False})

    AttentionInterface.register(SERVICE_ATTENTION, service_attention)
    AttentionMaskInterface.register(SERVICE_ATTENTION, always_built_mask)


class ModelForward:
    """A transformers base model (eval mode, loaded with attn_implementation SERVICE_ATTENTION) and the
    hooks that record each layer's attention."""

    def __init__(self, model: Any, family: Family):
        self.model, self.family = model, family
        config = model.config
        self.parts: list[LayerParts] = family.layers(model)
        self.layer_of = {id(parts.attention): index for index, parts in enumerate(self.parts)}
        self.num_heads = int(config.num_attention_heads)
        self.num_kv_heads = kv_heads_of(config)
        self.d_head = head_size(config)
        self.d_model = int(config.hidden_size)
        self.scale = model_scale(config, self.parts[0])  # the model's own
        self.causal = family.kind == "decoder"
        self.positions = family.positions(config)
        self.windows = layer_windows(config)
        self.softcap = softcap_of(config)
        self.native = Converter(model.device, model.dtype)  # the forward runs as the model does
        for index, parts in enumerate(self.parts):
            parts.attention.register_forward_pre_hook(self._input_hook, with_kwargs=True)
            parts.output.register_forward_hook(self._output_hook(index))
            parts.block.register_forward_pre_hook(self._block_hook(index), with_kwargs=True)

    @property
    def rotary(self) -> bool:
        return self.positions == "rotary"

    def _input_hook(self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        recording = _RECORDING.get()
        if recording is None:
            return
        hidden = args[0] if args else kwargs["hidden_states"]
        embedding = kwargs.get("position_embeddings")
        rotary = None if embedding is None else Rotary(*embedding)
        recording.inputs[self.layer_of[id(module)]] = (hidden, rotary)

    def _block_hook(self, layer: int) -> Any:
        def hook(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            recording = _RECORDING.get()
            if recording is not None and layer in recording.want_blocks:
                recording.blocks[layer] = BlockCall(module, args, kwargs)

        return hook

    def _output_hook(self, layer: int) -> Any:
        def hook(module: torch.nn.Module, args: tuple[Any, ...], output: Tensor) -> None:
            recording = _RECORDING.get()
            if recording is None:
                return
            if layer in recording.keep:
                recording.record(recording.layer_pass(layer, output))
            else:  # only the layers asked for are held: the 413 estimate counts those
                recording.inputs.pop(layer, None)
                recording.attended.pop(layer, None)
            if layer == recording.last and recording.whole is None:
                raise _Stop

        return hook

    def layers(
        self,
        input_ids: Int[Tensor, "batch pos"],
        key_mask: Bool[Tensor, "batch pos"] | None,
        last: int,
        pre_rotary: bool = False,
        keep: Collection[int] | None = None,
        lazily: bool = False,
        whole: WholePass | None = None,
        summarize: Summarize | None = None,
        blocks: Collection[int] = (),
    ) -> Iterator[LayerPass]:
        """The forward pass up to layer `last`, one LayerPass per layer of `keep` (default: every layer up to
        `last`) in order. `key_mask`: the padding (True = token); `pre_rotary`: also the projections before
        the rotary embedding; `lazily`: each layer is computed when the one before has been taken, and only
        it is held (a stream), rather than the whole pass at once; `whole`: see WholePass; `summarize`: no
        [query_pos, key_pos] matrix anywhere (Summarize); `blocks`: the kept layers whose LayerPass also
        holds how the whole layer was called (block_call)."""
        kept = range(last + 1) if keep is None else frozenset(keep)
        recording = _Recording(self, last, kept, pre_rotary, whole, summarize, frozenset(blocks))
        if lazily:
            yield from self._handed_over(recording, input_ids, key_mask)
            return
        self._run(recording, input_ids, key_mask)
        yield from recording.passes

    def _run(self, recording: _Recording, input_ids: Tensor, key_mask: Tensor | None) -> None:
        token = _RECORDING.set(recording)
        device = self.model.device
        inputs = {"input_ids": input_ids.to(device)}
        if key_mask is not None:
            inputs["attention_mask"] = key_mask.to(device=device, dtype=torch.long)
        try:
            with torch.inference_mode():
                outputs = self.model(**inputs, **({"use_cache": False} if self.causal else {}))
            if recording.whole is not None:
                recording.whole.final = outputs.last_hidden_state
                recording.whole.calls = recording.blocks
        except _Stop:
            pass
        finally:
            _RECORDING.reset(token)

    def _handed_over(
        self, recording: _Recording, input_ids: Tensor, key_mask: Tensor | None
    ) -> Iterator[LayerPass]:
        """The forward pass on a thread of its own (transformers' models run a whole pass per call), whose
        hook hands each kept layer over here and waits until the next one is asked for; closed early (a
        client gone, an error), the pass stops at the next layer."""
        handed: queue.SimpleQueue[LayerPass | BaseException | None] = queue.SimpleQueue()  # None: the end
        resume = threading.Semaphore(0)
        stopped = False

        def hand_over(layer_pass: LayerPass) -> None:
            handed.put(layer_pass)
            resume.acquire()
            if stopped:
                raise _Stop

        def work() -> None:
            try:
                self._run(recording, input_ids, key_mask)
                handed.put(None)
            except BaseException as error:  # raised where the layers are read
                handed.put(error)

        recording.hand_over = hand_over
        worker = threading.Thread(target=work, name="attention-forward", daemon=True)
        worker.start()
        try:
            while (item := handed.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
                del item  # not held while the next layer is computed
                resume.release()
        finally:
            stopped = True
            resume.release()
            worker.join()
