"""The attention module: multi-head scaled dot-product attention that keeps every internal.

For a query input X [batch, query_pos, d_model] and key and value inputs C [batch, key_pos, d_model] (C is X
in self-attention), with h heads:

    Q = X W_q + b_q,   K = C W_k + b_k,   V = C W_v + b_v        split into h heads
    scores        = Q K^T                                         per head
    scaled_scores = scores * scale, masked entries -inf           scale defaults to 1/sqrt(d_k)
    weights       = softmax(scaled_scores) over key_pos           a row with no key left is all 0
    context       = weights V                                     per head
    output        = concat(heads) W_o + b_o                       without W_o: concat(heads)

A missing projection is the identity: Q, K and V given directly are the query, key and value inputs with no
W_q, W_k, W_v. It equals ``torch.nn.MultiheadAttention(..., average_attn_weights=False)`` (weights, output)
and ``torch.nn.functional.scaled_dot_product_attention`` (context), which the tests check. Axis names are
those of schemas/axes.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float
from torch import Tensor

from service.compute.device import DTYPE_NAMES, Converter, wider_dtypes
from service.errors import RequestError


@dataclass(frozen=True)
class Projections:
    """Weights in the in_out layout (Q = X @ W_q); a missing matrix means no projection, a missing bias no
    bias."""

    w_q: Float[Tensor, "d_model heads_d_k"] | None = None
    w_k: Float[Tensor, "d_model heads_d_k"] | None = None
    w_v: Float[Tensor, "d_model heads_d_v"] | None = None
    w_o: Float[Tensor, "heads_d_v d_out"] | None = None
    b_q: Float[Tensor, " heads_d_k"] | None = None
    b_k: Float[Tensor, " heads_d_k"] | None = None
    b_v: Float[Tensor, " heads_d_v"] | None = None
    b_o: Float[Tensor, " d_out"] | None = None

    def to(self, convert: Callable[[Tensor], Tensor]) -> Projections:
        given = ((name, getattr(self, name)) for name in PROJECTION_NAMES)
        return Projections(**{name: convert(tensor) for name, tensor in given if tensor is not None})


PROJECTION_NAMES = tuple(f.name for f in fields(Projections))  # found once: dataclasses.fields is slow


class AttentionInternals(NamedTuple):
    q: Float[Tensor, "batch head query_pos d_k"]
    k: Float[Tensor, "batch kv_head key_pos d_k"]
    v: Float[Tensor, "batch kv_head key_pos d_v"]
    scores: Float[Tensor, "batch head query_pos key_pos"]
    scaled_scores: Float[Tensor, "batch head query_pos key_pos"]  # -inf where masked
    weights: Float[Tensor, "batch head query_pos key_pos"]
    context: Float[Tensor, "batch head query_pos d_v"]
    output: Float[Tensor, "batch query_pos d_out"]
    q_pre_rotary: Float[Tensor, "batch head query_pos d_k"] | None = None  # rotary models only
    k_pre_rotary: Float[Tensor, "batch kv_head key_pos d_k"] | None = None


AllowedPositions = Bool[Tensor, "batch_or_1 head_or_1 query_pos key_pos"]


class Rotary(NamedTuple):
    """A rotary model's position embedding for each position (the model's own cos and sin)."""

    cos: Float[Tensor, "batch_or_1 pos d_k"]
    sin: Float[Tensor, "batch_or_1 pos d_k"]

    def to(self, convert: Callable[[Tensor], Tensor]) -> Rotary:
        return Rotary(convert(self.cos), convert(self.sin))


def rotate(x: Float[Tensor, "batch head pos d_k"], rotary: Rotary) -> Float[Tensor, "batch head pos d_k"]:
    """The rotary embedding as Llama-family models apply it: x cos + rotate_half(x) sin, where rotate_half
    turns each pair (x_i, x_{i + d/2}) by a quarter turn."""
    first, second = x.chunk(2, dim=-1)
    half_turned = torch.cat((-second, first), dim=-1)
    return x * rotary.cos[:, None] + half_turned * rotary.sin[:, None]


def _project(x: Float[Tensor, "batch pos d_in"], weight: Tensor | None, bias: Tensor | None) -> Tensor:
    """x @ weight + bias for weight in the in_out layout [d_in, d_out]; no weight means no projection."""
    if weight is None:
        return x
    return x @ weight if bias is None else x @ weight + bias


def _split_heads(x: Float[Tensor, "batch pos heads_d"], num_heads: int) -> Float[Tensor, "batch head pos d"]:
    batch, pos, _ = x.shape
    return x.view(batch, pos, num_heads, -1).transpose(1, 2)


def pre_rotary(
    x: Float[Tensor, "batch pos d_model"], projections: Projections, num_heads: int, num_kv_heads: int
) -> tuple[Float[Tensor, "batch head pos d_k"], Float[Tensor, "batch kv_head pos d_k"]]:
    """Q and K before the rotary embedding: X's projections, split into query and key/value heads."""
    p = projections
    return (
        _split_heads(_project(x, p.w_q, p.b_q), num_heads),
        _split_heads(_project(x, p.w_k, p.b_k), num_kv_heads),
    )


class HeadInternals(NamedTuple):
    scores: Float[Tensor, "batch head query_pos key_pos"]
    scaled_scores: Float[Tensor, "batch head query_pos key_pos"]
    weights: Float[Tensor, "batch head query_pos key_pos"]
    context: Float[Tensor, "batch head query_pos d_v"]


def attend_heads(
    q: Float[Tensor, "batch head query_pos d_k"],
    k: Float[Tensor, "batch kv_head key_pos d_k"],
    v: Float[Tensor, "batch kv_head key_pos d_v"],
    scale: float,
    allowed: AllowedPositions | None = None,
    softcap: float | None = None,
    softmax_dtype: torch.dtype | None = None,
) -> HeadInternals:
    """Scores, scaled scores, weights and context of every query head. Under grouped-query attention (fewer
    kv heads than query heads) query head h reads kv head h // group, as repeat_kv orders them, without
    copying k or v per query head: the group's queries are stacked against their one kv head. `softcap`:
    scaled scores become softcap * tanh(scaled / softcap) before the mask (Gemma 2). `softmax_dtype`: the
    softmax in that dtype, then back (the models' eager attention upcasts half precision to float32)."""
    batch, heads, query_pos, d_k = q.shape
    kv_heads, key_pos = k.shape[1], k.shape[2]
    group = heads // kv_heads
    if group == 1:  # a query head per kv head: nothing to stack (the views would have q's own shape)
        scores = q @ k.transpose(-2, -1)
    else:
        stacked = q.reshape(batch, kv_heads, group * query_pos, d_k)  # a view unless q is a strided view
        scores = (stacked @ k.transpose(-2, -1)).view(batch, heads, query_pos, key_pos)
    scaled_scores = scores * scale
    if softcap is not None:
        scaled_scores = torch.tanh(scaled_scores / softcap) * softcap
    if allowed is not None:
        scaled_scores = scaled_scores.masked_fill(~allowed, float("-inf"))
    if softmax_dtype is None or softmax_dtype == scaled_scores.dtype:
        weights = F.softmax(scaled_scores, dim=-1)
    else:
        weights = F.softmax(scaled_scores, dim=-1, dtype=softmax_dtype).to(scaled_scores.dtype)
    if allowed is not None:  # a row with every key masked is 0/0 in softmax: define it as 0
        weights = weights.masked_fill(~allowed.any(dim=-1, keepdim=True), 0.0)
    if group == 1:
        context = weights @ v
    else:
        grouped_weights = weights.view(batch, kv_heads, group * query_pos, key_pos)
        context = (grouped_weights @ v).view(batch, heads, query_pos, -1)
    return HeadInternals(scores, scaled_scores, weights, context)


def attention(
    query_input: Float[Tensor, "batch query_pos d_query_in"],
    key_input: Float[Tensor, "batch key_pos d_key_in"],
    value_input: Float[Tensor, "batch key_pos d_value_in"],
    projections: Projections,
    num_heads: int,
    scale: float,
    allowed: AllowedPositions | None = None,
    *,
    num_kv_heads: int | None = None,
    rotary: Rotary | None = None,
    softcap: float | None = None,
) -> AttentionInternals:
    """Every internal of attention. The inputs are what W_q, W_k, W_v project (X, C, C), or Q, K, V themselves
    when `projections` has no such matrix; all on one device and in one dtype with the projections.
    `allowed`: True where a query may attend a key (allowed_positions), or None for no mask.
    `num_kv_heads`: key/value heads (grouped-query attention; default one per query head); `rotary`: rotate
    Q and K by the model's position embedding (the projections before it are kept); `softcap`: see
    attend_heads."""
    p = projections
    batch, query_pos, _ = query_input.shape
    kv_heads = num_kv_heads or num_heads
    q = _split_heads(_project(query_input, p.w_q, p.b_q), num_heads)  # [batch, head, query_pos, d_k]
    k = _split_heads(_project(key_input, p.w_k, p.b_k), kv_heads)  # [batch, kv_head, key_pos, d_k]
    v = _split_heads(_project(value_input, p.w_v, p.b_v), kv_heads)  # [batch, kv_head, key_pos, d_v]
    q_pre_rotary = k_pre_rotary = None
    if rotary is not None:
        q_pre_rotary, k_pre_rotary = q, k
        q, k = rotate(q, rotary), rotate(k, rotary)
    heads = attend_heads(q, k, v, scale, allowed, softcap)
    concat = heads.context.transpose(1, 2).reshape(batch, query_pos, -1)  # [batch, query_pos, heads*d_v]
    output = _project(concat, p.w_o, p.b_o)  # [batch, query_pos, d_out]
    return AttentionInternals(q, k, v, *heads, output, q_pre_rotary, k_pre_rotary)


def allowed_positions(
    key_mask: Bool[Tensor, "batch key_pos"] | None,
    causal: bool,
    query_pos: int,
    key_pos: int,
    device: torch.device,
) -> AllowedPositions | None:
    """The positions each query may attend, [batch or 1, 1, query_pos, key_pos], from a padding mask (True =
    attend) and causality (key j <= query i, aligned top-left), or None when nothing is masked."""
    allowed = None
    if key_mask is not None:
        allowed = key_mask[:, None, None, :]  # [batch, 1, 1, key_pos]
    if causal:
        lower = torch.ones(query_pos, key_pos, dtype=torch.bool, device=device).tril()  # [query_pos, key_pos]
        allowed = lower[None, None] if allowed is None else allowed & lower
    return allowed


class Overflow(RequestError):
    """An internal with a value past the dtype's range (inf or nan that no mask explains): a 422 on `dtype`
    that names the tensor."""

    def __init__(self, tensor: str, dtype: torch.dtype, where: str = ""):
        name = DTYPE_NAMES.get(dtype, str(dtype))
        super().__init__(
            ("dtype",),
            f"{where}the {tensor} overflowed {name}: some values are past its largest, "
            f"{torch.finfo(dtype).max:g}; {wider_dtypes(dtype)}",
        )
        self.tensor, self.dtype = tensor, dtype


SMALL = 1 << 16  # internals of at most this many numbers in all are checked in one pass over one copy


def _present(internals: AttentionInternals) -> list[tuple[str, Tensor]]:
    """The internals that were computed, by name (the projections before rotation only for rotary models)."""
    return [
        (name, tensor)
        for name, tensor in zip(internals._fields, internals, strict=True)
        if tensor is not None
    ]


def _first_overflow_on_host(
    names: list[str], arrays: list[np.ndarray], allowed: AllowedPositions | None
) -> str | None:
    masked = None if allowed is None else ~allowed.cpu().numpy()
    scaled_at = names.index("scaled_scores")
    if sum(array.size for array in arrays) <= SMALL:  # small requests: one check (dispatch costs more)
        unmasked = arrays if masked is None else arrays[:scaled_at] + arrays[scaled_at + 1 :]
        if np.isfinite(np.concatenate(unmasked, axis=None)).all() and (
            masked is None or (np.isfinite(arrays[scaled_at]) | masked).all()
        ):
            return None
    for index, (name, array) in enumerate(zip(names, arrays, strict=True)):
        finite = np.isfinite(array)
        if index == scaled_at and masked is not None:
            finite |= masked
        if not finite.all():
            return name
    return None


def overflowed(internals: AttentionInternals, allowed: AllowedPositions | None) -> str | None:
    """The first internal, in the order q, k, v, scores, scaled_scores, weights, context, output, with an inf
    or nan other than the -inf of a masked scaled score; None when there is none. On the CPU in numpy (torch's
    dispatch costs more than small tensors), elsewhere in torch with one copy to the host."""
    present = _present(internals)
    names = [name for name, _ in present]
    try:
        arrays = [tensor.numpy() for _, tensor in present]  # views; CPU tensors of a dtype numpy has
    except TypeError:  # on a GPU, or bfloat16
        pass
    else:
        return _first_overflow_on_host(names, arrays, allowed)
    flags = []
    for name, tensor in present:
        finite = torch.isfinite(tensor)
        if name == "scaled_scores" and allowed is not None:
            finite |= ~allowed
        flags.append(finite.all())
    found = torch.stack(flags).tolist()  # one copy to the host
    return next((name for name, ok in zip(names, found, strict=True) if not ok), None)


def attention_on(
    convert: Converter,
    query_input: np.ndarray | Tensor,
    key_input: np.ndarray | Tensor,
    value_input: np.ndarray | Tensor,
    projections: Projections,
    num_heads: int,
    scale: float,
    causal: bool,
    key_mask: np.ndarray | Tensor | None,
    layer: int | None = None,
    *,
    num_kv_heads: int | None = None,
    rotary: Rotary | None = None,
    softcap: float | None = None,
    model_allowed: AllowedPositions | None = None,
) -> AttentionInternals:
    """attention() on `convert`'s device and in its dtype, with the mask built from a padding mask [batch,
    key_pos] (True = attend) and causality, and `model_allowed` (a model's own mask: causal, windowed,
    padded) on top; an input given twice (X as the key and value input) is moved once. Raises Overflow when
    an internal went past the dtype's range (naming the model's `layer`, if any): null in a response only
    ever means a masked entry."""
    moved: dict[int, Tensor] = {}

    def on_device(array: np.ndarray | Tensor) -> Tensor:
        if id(array) not in moved:
            moved[id(array)] = convert(array)
        return moved[id(array)]

    with torch.inference_mode():
        mask = None if key_mask is None else torch.as_tensor(key_mask).to(convert.device)
        allowed = allowed_positions(mask, causal, query_input.shape[1], key_input.shape[1], convert.device)
        if model_allowed is not None:
            own = model_allowed.to(convert.device)
            allowed = own if allowed is None else allowed & own
        internals = attention(
            on_device(query_input),
            on_device(key_input),
            on_device(value_input),
            projections.to(convert),
            num_heads,
            scale,
            allowed,
            num_kv_heads=num_kv_heads,
            rotary=None if rotary is None else rotary.to(convert),
            softcap=softcap,
        )
        tensor = overflowed(internals, allowed)
    if tensor is not None:
        raise Overflow(tensor, convert.dtype, "" if layer is None else f"layer {layer}: ")
    return internals
