"""Attention in blocks of query rows, for requests that ask for no [query_pos, key_pos] tensor.

Each row of weights depends only on its own scores, so a block of rows computed alone is exact: a block's
scores, weights and context are computed (service/compute/attention.py's attend_heads), reduced to the
summaries asked for (service/compute/summaries.py), its context kept, and the block dropped before the next.
Memory grows with seq * seq_kv / (number of blocks), not seq * seq_kv: each block holds at most
BLOCK_ELEMENTS scores, of one kv head's query heads (or of several kv heads when their rows all fit:
head_blocks). Which keys a block's rows see comes from a RowMask, built for those
rows only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float
from torch import Tensor

from schemas.axes import TensorName
from service.compute.attention import (
    AllowedPositions,
    Overflow,
    Projections,
    Rotary,
    rotate,
)
from service.compute.attention import _project as project  # the one projection and head split of attention()
from service.compute.attention import _split_heads as split_heads
from service.compute.fused import softmax_entropy
from service.compute.summaries import SummaryReducer

BLOCK_ELEMENTS = 1 << 20  # scores of one block, over the batch and the block's heads (4 MB in float32)
# block-sized tensors at once (scores, weights, w * (s - max), the two head-score patterns, a tie's top-k
# masks, the keys of wide rows waiting for the rest of the top-k search, summaries.py's TOP_PENDING_ELEMENTS):
# the 413
BLOCK_COPIES = 8


def rows_per_block(batch: int, heads: int, seq_kv: int) -> int:
    """Query rows per block: as many as keep a block's scores within BLOCK_ELEMENTS, at least one."""
    return max(1, BLOCK_ELEMENTS // max(1, batch * heads * seq_kv))


def row_blocks(batch: int, heads: int, query_pos: int, key_pos: int) -> Iterator[tuple[int, int]]:
    """The (start, stop) of each block of query rows, in order, each within BLOCK_ELEMENTS of scores."""
    rows = rows_per_block(batch, heads, key_pos)
    for start in range(0, query_pos, rows):
        yield start, min(query_pos, start + rows)


class HeadBlock(NamedTuple):
    """A block of attend_blocked: the kv heads first .. stop (with their query heads) and query rows
    start .. stop."""

    kv_heads: slice
    start: int
    stop: int


def head_blocks(batch: int, kv_heads: int, group: int, query_pos: int, key_pos: int) -> Iterator[HeadBlock]:
    """attend_blocked's blocks, each within BLOCK_ELEMENTS of scores: the rows of a kv head (and its `group`
    query heads) at a time, every kv head of the same rows in turn (their mask is built once). A block of
    every head's rows would have 1 / kv_heads the rows, and each block reads its heads' keys and values
    whole: at 8k tokens and 12 heads (10 rows a block) that reading cost more than the scores. Several kv
    heads a block when one head's rows all fit."""
    rows = rows_per_block(batch, group, key_pos)
    if rows >= query_pos:
        heads = max(1, rows // query_pos)  # whole kv heads a block
        for first in range(0, kv_heads, heads):
            yield HeadBlock(slice(first, min(kv_heads, first + heads)), 0, query_pos)
        return
    for start in range(0, query_pos, rows):
        for head in range(kv_heads):
            yield HeadBlock(slice(head, head + 1), start, min(query_pos, start + rows))


class RowMask(Protocol):
    """Which keys the queries start .. stop may attend: [batch or 1, head or 1, rows, key_pos], True =
    attend, or None when they see every key."""

    def rows(self, start: int, stop: int) -> AllowedPositions | None: ...


@dataclass(frozen=True)
class Visibility:
    """The explicit path's mask: a padding mask over the keys and causality (key j <= query i, top-left
    aligned), built per block; `own`: a whole mask given besides (a model's, recomputed at another
    setting), whose rows are taken."""

    key_mask: Bool[Tensor, "batch key_pos"] | None
    causal: bool
    seq_kv: int
    own: RowMask | None = None

    def rows(self, start: int, stop: int) -> AllowedPositions | None:
        allowed = None if self.key_mask is None else self.key_mask[:, None, None, :]
        if self.causal:
            device = self.key_mask.device if self.key_mask is not None else None
            query = torch.arange(start, stop, device=device)[:, None]  # [rows, 1]
            lower = torch.arange(self.seq_kv, device=device)[None, :] <= query  # [rows, key_pos]
            allowed = lower[None, None] if allowed is None else allowed & lower
        if self.own is not None:
            own = self.own.rows(start, stop)
            if own is not None:
                allowed = own if allowed is None else allowed & own.to(allowed.device)
        return allowed


class WholeMask:
    """A mask held whole (short inputs, or a model's), cut into rows."""

    def __init__(self, allowed: AllowedPositions | None):
        self.allowed = allowed

    def rows(self, start: int, stop: int) -> AllowedPositions | None:
        return None if self.allowed is None else self.allowed[:, :, start:stop]


class ModelRowMask:
    """A transformers model's mask, not built whole: the arguments its mask interface was called with
    (transformers.masking_utils: the model's mask function, causal, sliding window, padding), built for a
    block of rows by sdpa_mask with the rows' query offset. `plain`: the mask is causal or bidirectional
    with no padding and no window, which SDPA's is_causal (or no mask) states without building it."""

    def __init__(self, arguments: dict[str, Any]):
        from transformers.masking_utils import bidirectional_mask_function, causal_mask_function

        self.arguments = arguments
        function = arguments.get("mask_function")
        padding = arguments.get("attention_mask")
        unpadded = padding is None or bool(padding.all())
        aligned = (
            arguments.get("q_offset", 0) == 0
            and arguments.get("kv_offset", 0) == 0
            and arguments["q_length"] == arguments["kv_length"]
        )
        self.causal = function is causal_mask_function
        self.plain = unpadded and aligned and (self.causal or function is bidirectional_mask_function)

    def rows(self, start: int, stop: int) -> AllowedPositions | None:
        from transformers.masking_utils import sdpa_mask

        arguments = {
            **self.arguments,
            "q_length": stop - start,
            "q_offset": self.arguments.get("q_offset", 0) + start,
            "allow_is_causal_skip": False,
            "allow_is_bidirectional_skip": False,
        }
        mask: AllowedPositions | None = sdpa_mask(**arguments)
        return mask


def attend_blocked(
    q: Float[Tensor, "batch head query_pos d_k"],
    k: Float[Tensor, "batch kv_head key_pos d_k"],
    v: Float[Tensor, "batch kv_head key_pos d_v"],
    scale: float,
    mask: RowMask,
    reducer: SummaryReducer | None,
    softcap: float | None = None,
    softmax_dtype: torch.dtype | None = None,
) -> Float[Tensor, "batch head query_pos d_v"]:
    """The context of every query head, computed a block of rows at a time, each block's weights given to
    `reducer` (if any) before the next. A score past the dtype's range shows as nan or inf in the context
    and the summaries, which the callers check (overflowed_blocked): no pass over each block for it."""
    batch, heads, query_pos, _ = q.shape
    kv_heads = k.shape[1]
    group = heads // kv_heads
    k, v = k.contiguous(), v.contiguous()  # once per layer, not a copy per block inside each matmul
    entropy = reducer is not None and reducer.wants_entropy
    context = q.new_empty(batch, heads, query_pos, v.shape[-1])
    rows = _RowsOf(mask, q.device)
    blocks = list(head_blocks(batch, kv_heads, group, query_pos, k.shape[2]))
    rows_of_heads = (batch * (kv.stop - kv.start) * group * (stop - start) for kv, start, stop in blocks)
    # the scores and weights of every block, written over: one pair for the layer rather than a new pair
    # per block, each of another size (no allocation and no heap fragments per block)
    scratch = q.new_empty(2, max(rows_of_heads, default=0) * k.shape[2])
    for kv, start, stop in blocks:
        own = slice(kv.start * group, kv.stop * group)  # the query heads of these kv heads
        seen = rows.of(start, stop, k.shape[2]).of_heads(own)
        block = _block(
            q[:, own, start:stop], k[:, kv, : seen.width], v[:, kv, : seen.width], scale, seen, softcap,
            softmax_dtype, entropy, scratch,
        )  # fmt: skip
        if reducer is not None:
            reducer.add(start, block.weights, block.entropy, own)
        context[:, own, start:stop] = block.context
        del block, seen
    return context


class RowsSeen(NamedTuple):
    """What the rows of a block see: `width`, one more than the last key any row sees (causal: half the
    keys); `first`, the first key some row does not see; `hidden`, the keys first .. width that each row
    does not see (True = hidden), or None when every row sees every key; `empty`, the rows that see no key,
    or None when there are none."""

    hidden: Bool[Tensor, "batch head rows hidden_width"] | None
    width: int
    first: int
    empty: Bool[Tensor, "batch head rows 1"] | None

    def of_heads(self, heads: slice) -> RowsSeen:
        """The same for the query heads `heads`, when the mask has one per head."""
        if self.hidden is None or self.hidden.shape[1] == 1:
            return self
        empty = None if self.empty is None else self.empty[:, heads]
        return self._replace(hidden=self.hidden[:, heads], empty=empty)


class _RowsOf:
    """The RowsSeen of a RowMask's rows start .. stop; the last rows asked for are kept, since the blocks of
    every kv head of the same rows follow each other (head_blocks). A mask that is causal and nothing else
    is not built: its rows' RowsSeen is known (row i sees keys 0 .. i), and the hidden keys are the
    triangle above the block's diagonal, rows x rows rather than rows x key_pos."""

    def __init__(self, mask: RowMask, device: torch.device):
        self.mask, self.device = mask, device
        self.causal_only = _causal_only(mask)
        self.last: tuple[int, int, RowsSeen] | None = None

    def of(self, start: int, stop: int, key_pos: int) -> RowsSeen:
        if self.last is not None and self.last[:2] == (start, stop):
            return self.last[2]
        self.last = None
        seen = self._causal(start, stop, key_pos) if self.causal_only else self._built(start, stop, key_pos)
        self.last = (start, stop, seen)
        return seen

    def _built(self, start: int, stop: int, key_pos: int) -> RowsSeen:
        allowed = self.mask.rows(start, stop)
        if allowed is None:
            return RowsSeen(None, key_pos, key_pos, None)
        width = visible_width(allowed)
        allowed = allowed[..., :width]
        whole = allowed.reshape(-1, width).all(0)  # [width]: keys every row of the block sees
        first = int((~whole).nonzero()[0]) if not bool(whole.all()) else width
        sees = allowed.any(-1, keepdim=True)  # [batch or 1, head or 1, rows, 1]
        hidden = ~allowed[..., first:] if first < width else None
        return RowsSeen(hidden, width, first, None if bool(sees.all()) else ~sees)

    def _causal(self, start: int, stop: int, key_pos: int) -> RowsSeen:
        width = min(stop, key_pos)  # row i sees keys 0 .. i
        first = min(start + 1, width)  # row `start` sees no key after itself
        if first == width:
            return RowsSeen(None, width, width, None)
        query = torch.arange(start, stop, device=self.device)[:, None]  # [rows, 1]
        key = torch.arange(first, width, device=self.device)[None, :]  # [1, width - first]
        return RowsSeen((key > query)[None, None], width, first, None)


def _causal_only(mask: RowMask) -> bool:
    """Whether `mask` hides exactly the keys after each query (top-left aligned), nothing else."""
    if isinstance(mask, ModelRowMask):
        return mask.plain and mask.causal
    if isinstance(mask, Visibility):
        return mask.causal and mask.key_mask is None and mask.own is None
    return False


class Block(NamedTuple):
    """A block's weights, each row's entropy (when asked) and its context."""

    weights: Float[Tensor, "batch head rows width"]
    entropy: Float[Tensor, "batch head rows"] | None
    context: Float[Tensor, "batch head rows d_v"]


def _block(
    q: Float[Tensor, "batch head rows d_k"],
    k: Float[Tensor, "batch kv_head width d_k"],
    v: Float[Tensor, "batch kv_head width d_v"],
    scale: float,
    seen: RowsSeen,
    softcap: float | None,
    softmax_dtype: torch.dtype | None,
    entropy: bool,
    scratch: Float[Tensor, "2 elements"],
) -> Block:
    """attend_heads (service/compute/attention.py) for one block, in fewer passes over its scores: the scale
    applied to q (rows x d_k numbers, not rows x width), the mask written in place and only from the first
    key some row may not see (a causal block: its last rows' width, not all of it), the fill of rows with no
    key only when there are such rows. `entropy`: each row's entropy too, computed with the softmax
    (service/compute/fused.py: one kernel when compiled). A masked score is the dtype's lowest number rather
    than -inf: its weight is still exactly 0 and its score less the row's largest finite, so that the
    entropy's w * (s - max) is 0 there with no pass to skip it."""
    batch, heads, rows, d_k = q.shape
    kv_heads, width = k.shape[1], k.shape[2]
    group = heads // kv_heads
    stacked = (q * scale).reshape(batch, kv_heads, group * rows, d_k)  # head h reads kv head h // group
    size = batch * heads * rows * width
    scores = torch.matmul(
        stacked, k.transpose(-2, -1), out=scratch[0, :size].view(batch, kv_heads, group * rows, width)
    ).view(batch, heads, rows, width)  # scaled
    into = scratch[1, :size].view(batch, heads, rows, width)  # the weights
    if softcap is not None:
        scores = scores.div_(softcap).tanh_().mul_(softcap)
    if seen.hidden is not None:
        scores[..., seen.first :].masked_fill_(seen.hidden, torch.finfo(scores.dtype).min)
    row_entropy = None
    if entropy and softmax_dtype in (None, scores.dtype):
        weights, row_entropy = softmax_entropy(scores, into)  # service/compute/fused.py
    elif softmax_dtype in (None, scores.dtype):
        weights = torch.softmax(scores, -1, out=into)
    else:  # a half-precision model's softmax in float32, as its eager attention does
        weights = F.softmax(scores, dim=-1, dtype=softmax_dtype).to(scores.dtype)
    if seen.empty is not None:  # a row with every key masked: weight 0, as attend_heads defines it
        weights = weights.masked_fill_(seen.empty, 0.0)
    if entropy and row_entropy is None:
        row_entropy = torch.special.entr(weights).sum(-1)
    elif row_entropy is not None and seen.empty is not None:
        row_entropy = row_entropy.masked_fill_(seen.empty[..., 0], 0.0)
    grouped = weights.view(batch, kv_heads, group * rows, width)
    context = (grouped @ v).view(batch, heads, rows, -1)
    return Block(weights, row_entropy, context)


def visible_width(allowed: AllowedPositions) -> int:
    """One more than the last key position that any row of the block may attend (at least 1)."""
    seen = allowed.reshape(-1, allowed.shape[-1]).any(0)  # [key_pos]
    last = int(seen.nonzero().max()) if bool(seen.any()) else 0
    return last + 1


def _sdpa(q: Tensor, k: Tensor, v: Tensor, scale: float, allowed: Tensor | None, causal: bool) -> Tensor:
    group = q.shape[1] // k.shape[1]
    if group > 1:  # repeat_kv's order: O(n) memory, unlike the scores
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    context = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, is_causal=causal, scale=scale)
    if allowed is not None:  # a row with no key left: 0, as the service defines it (SDPA gives nan)
        context = context.masked_fill(~allowed.any(-1, keepdim=True), 0.0)
    return context


def context_only(
    q: Float[Tensor, "batch head query_pos d_k"],
    k: Float[Tensor, "batch kv_head key_pos d_k"],
    v: Float[Tensor, "batch kv_head key_pos d_v"],
    scale: float,
    mask: ModelRowMask | None,
    softcap: float | None = None,
    softmax_dtype: torch.dtype | None = None,
) -> Float[Tensor, "batch head query_pos d_v"]:
    """The context of a layer no one inspects: torch's scaled_dot_product_attention (its memory-efficient
    kernels), whole when the mask is plain causal or absent, else a block of rows at a time with each
    block's mask; a soft-capped model (SDPA has no cap) through attend_blocked without summaries."""
    if softcap is not None:
        return attend_blocked(q, k, v, scale, mask or WholeMask(None), None, softcap, softmax_dtype)
    if mask is None or mask.plain:
        return _sdpa(q, k, v, scale, None, mask is not None and mask.causal)
    batch, heads, query_pos, _ = q.shape
    context = q.new_empty(batch, heads, query_pos, v.shape[-1])
    for start, stop in row_blocks(batch, heads, query_pos, k.shape[2]):
        allowed = mask.rows(start, stop)
        context[:, :, start:stop] = _sdpa(q[:, :, start:stop], k, v, scale, allowed, False)
    return context


class BlockedInternals(NamedTuple):
    """What a blocked computation keeps: the internals without a [query_pos, key_pos] matrix, and the
    summaries by name."""

    q: Float[Tensor, "batch head query_pos d_k"]
    k: Float[Tensor, "batch kv_head key_pos d_k"]
    v: Float[Tensor, "batch kv_head key_pos d_v"]
    context: Float[Tensor, "batch head query_pos d_v"]
    output: Float[Tensor, "batch query_pos d_out"]
    summaries: dict[TensorName, Tensor]
    q_pre_rotary: Float[Tensor, "batch head query_pos d_k"] | None = None
    k_pre_rotary: Float[Tensor, "batch kv_head key_pos d_k"] | None = None

    def tensor(self, name: TensorName) -> Tensor:
        if name in self.summaries:
            return self.summaries[name]
        found: Tensor | None = getattr(self, name)
        assert found is not None, name
        return found


def overflowed_blocked(internals: BlockedInternals) -> str | None:
    """The first of q, k, v, context, output and the summaries with an inf or nan (none is ever masked)."""
    named = [
        *((name, getattr(internals, name)) for name in ("q", "k", "v", "context", "output")),
        *internals.summaries.items(),
    ]
    flags = torch.stack([torch.isfinite(tensor).all() for _, tensor in named]).tolist()  # one host copy
    return next((name for (name, _), ok in zip(named, flags, strict=True) if not ok), None)


def attention_blocked(
    query_input: Float[Tensor, "batch query_pos d_query_in"],
    key_input: Float[Tensor, "batch key_pos d_key_in"],
    value_input: Float[Tensor, "batch key_pos d_value_in"],
    projections: Projections,
    num_heads: int,
    scale: float,
    mask: RowMask,
    reducer: Callable[[Tensor], SummaryReducer],
    *,
    num_kv_heads: int | None = None,
    rotary: Rotary | None = None,
    softcap: float | None = None,
    pre_rotary: bool = False,
    where: str = "",
) -> BlockedInternals:
    """attention() (service/compute/attention.py) in blocks of query rows: the same projections, rotation,
    heads and output, with the summaries of `reducer(q)` instead of scores and weights. Raises Overflow."""
    p = projections
    kv_heads = num_kv_heads or num_heads
    q = split_heads(project(query_input, p.w_q, p.b_q), num_heads)  # [batch, head, query_pos, d_k]
    k = split_heads(project(key_input, p.w_k, p.b_k), kv_heads)  # [batch, kv_head, key_pos, d_k]
    v = split_heads(project(value_input, p.w_v, p.b_v), kv_heads)  # [batch, kv_head, key_pos, d_v]
    q_pre_rotary = k_pre_rotary = None
    if rotary is not None:
        if pre_rotary:
            q_pre_rotary, k_pre_rotary = q, k
        q, k = rotate(q, rotary), rotate(k, rotary)
    reduce = reducer(q)
    context = attend_blocked(q, k, v, scale, mask, reduce, softcap)
    batch, query_pos = query_input.shape[:2]
    concat = context.transpose(1, 2).reshape(batch, query_pos, -1)  # [batch, query_pos, heads*d_v]
    output = project(concat, p.w_o, p.b_o)  # [batch, query_pos, d_out]
    internals = BlockedInternals(q, k, v, context, output, reduce.finish(), q_pre_rotary, k_pre_rotary)
    tensor = overflowed_blocked(internals)
    if tensor is not None:
        raise Overflow(tensor, q.dtype, where)
    return internals
