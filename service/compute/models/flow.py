"""Where information flows through a model's layers: attention rollout, norm-based attention and value
zeroing, from each layer's pass (service/compute/models/forward.py LayerPass).

- rollout (Abnar & Zuidema 2020): A'_m = 0.5 mean_h(W_m) + 0.5 I, each row renormalized to sum 1;
  rollout_l = A'_l A'_(l-1) ... A'_0. The identity covers the real positions only: a padding query's row
  is its attention alone (its own key is masked), so masked entries stay 0; a real row is the paper's.
- norms (Kobayashi et al. 2020): ||w_ij f_h(x_j)|| with f_h(x_j) = v_j^h W_o^h, the value of key j in head
  h (its bias included; query head h reads its kv head's value under grouped-query attention) times the
  rows of W_o that head h's context meets; norms_summed: ||sum_h w^h_ij f_h(x_j)||.
- value_zeroing (Mohebbi et al. 2023): the whole layer (attention, residuals, norms, MLP) run again through
  the model's own module, once per key j with v_j set to 0 in every head; entry ij = the cosine distance
  between token i's output with and without v_j, each row divided by its sum. The runs are batched: every
  (text, key) pair is one item of a batch, in chunks that hold at most VALUE_ZEROING_BUDGET numbers.

Entries where key j is not visible to query i (padding, causal, window) are 0; value zeroing also leaves out
the padding queries (rows of 0).
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from schemas.axes import FLOW_TENSOR_NAMES, TensorName
from service.compute.attention import AllowedPositions, AttentionInternals
from service.compute.models.forward import BlockCall, LayerPass, values_edited
from service.compute.sizes import Sizes

NORMS_BLOCK_ELEMENTS = 1 << 22  # norms_summed holds one block of queries' sums of vectors at a time
VALUE_ZEROING_BUDGET = 1 << 24  # numbers held by one chunk of value-zeroing runs


def _rows_normalized(rows: Float[Tensor, "... pos"]) -> Float[Tensor, "... pos"]:
    """Each row divided by its sum; a row that sums to 0 stays 0."""
    total = rows.sum(dim=-1, keepdim=True)
    return torch.where(total > 0, rows / torch.where(total > 0, total, 1), 0)


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    """Half precision is accumulated in float32 (a product of many layers, sums over keys)."""
    return torch.promote_types(dtype, torch.float32)


class Rollout:
    """The running product of the layers' A' matrices, one layer at a time in the order of the pass."""

    def __init__(self, key_mask: Bool[Tensor, "batch pos"] | None):
        self.key_mask = key_mask
        self.rolled: Float[Tensor, "batch query_pos key_pos"] | None = None

    def step(self, weights: Float[Tensor, "batch head query_pos key_pos"]) -> Float[Tensor, "batch qp kp"]:
        """The rollout through this layer (layers are stepped 0, 1, ... in turn)."""
        mean = weights.to(_work_dtype(weights.dtype)).mean(dim=1)  # [batch, query_pos, key_pos]
        batch, pos, _ = mean.shape
        real = (
            torch.ones(batch, pos, dtype=torch.bool, device=mean.device)
            if self.key_mask is None
            else self.key_mask.to(mean.device)
        )
        identity = torch.diag_embed(real.to(mean.dtype))  # [batch, pos, pos], 1 on real positions only
        layer = _rows_normalized(0.5 * mean + 0.5 * identity)
        self.rolled = layer if self.rolled is None else layer @ self.rolled
        return self.rolled.to(weights.dtype)


def value_through_w_o(
    internals: AttentionInternals, w_o: Float[Tensor, "heads_d_v d_out"]
) -> Float[Tensor, "batch head key_pos d_out"]:
    """f_h(x_j) = v_j^h W_o^h for every query head h (its kv head's value) and key j."""
    v = internals.v.to(_work_dtype(internals.v.dtype))
    batch, kv_heads, key_pos, d_v = v.shape
    heads = internals.weights.shape[1]
    per_head = v.repeat_interleave(heads // kv_heads, dim=1)  # [batch, head, key_pos, d_v], repeat_kv's order
    w = w_o.to(device=v.device, dtype=v.dtype).reshape(heads, d_v, -1)  # [head, d_v, d_out]
    return torch.einsum("bhkv,hvo->bhko", per_head, w)


def norms(
    internals: AttentionInternals, f: Float[Tensor, "batch head key_pos d_out"]
) -> Float[Tensor, "batch head query_pos key_pos"]:
    """||w_ij f_h(x_j)|| = w_ij ||f_h(x_j)|| (w_ij >= 0)."""
    weights = internals.weights
    scaled: Tensor = weights.to(f.dtype) * f.norm(dim=-1)[:, :, None, :]
    return scaled.to(weights.dtype)


def norms_summed(
    internals: AttentionInternals, f: Float[Tensor, "batch head key_pos d_out"]
) -> Float[Tensor, "batch query_pos key_pos"]:
    """||sum_h w^h_ij f_h(x_j)||, a block of queries at a time (the sums are [query, key, d_out] vectors)."""
    weights = internals.weights
    batch, _, query_pos, key_pos = weights.shape
    block = max(1, NORMS_BLOCK_ELEMENTS // max(1, batch * key_pos * f.shape[-1]))
    parts = []
    for start in range(0, query_pos, block):
        w = weights[:, :, start : start + block].to(f.dtype)  # [batch, head, block, key_pos]
        summed = torch.einsum("bhqk,bhko->bqko", w, f)  # [batch, block, key_pos, d_out]
        parts.append(summed.norm(dim=-1))
    return torch.cat(parts, dim=1).to(weights.dtype)


def _hidden(call: BlockCall) -> Tensor:
    hidden: Tensor = call.args[0] if call.args else call.kwargs["hidden_states"]
    return hidden


def _output(out: Any) -> Tensor:
    hidden: Tensor = out[0] if isinstance(out, tuple) else out
    return hidden


def _run_for(call: BlockCall, texts: Int[Tensor, " copies"], zeroed: Int[Tensor, " copies"] | None) -> Tensor:
    """The layer run again for `texts` (an index into the pass's batch, one item per copy), each copy with
    the value of key `zeroed[c]` set to 0 in every head (None: no value changed). Every batch-first tensor
    of the call (hidden states, masks, position ids and embeddings) is indexed the same way; a tensor with a
    batch of 1 is broadcast by the model as it is."""
    batch = _hidden(call).shape[0]

    def per_copy(value: Any) -> Any:
        if isinstance(value, Tensor) and value.ndim >= 2 and value.shape[0] == batch:
            return value[texts]
        if isinstance(value, tuple):
            return tuple(per_copy(item) for item in value)
        return value

    args = tuple(per_copy(a) for a in call.args)
    kwargs = {name: per_copy(value) for name, value in call.kwargs.items()}
    if zeroed is None:
        return _output(call.module(*args, **kwargs))
    key_pos = _hidden(call).shape[1]
    dropped = torch.nn.functional.one_hot(zeroed, key_pos).bool()[:, None, :, None]  # [copy, 1, key_pos, 1]

    def zero_values(value: Tensor) -> Tensor:  # [copy, kv_head, key_pos, d_v]
        return value.masked_fill(dropped.to(value.device), 0.0)

    with values_edited(zero_values):
        return _output(call.module(*args, **kwargs))


def _cosine_distance(a: Float[Tensor, "n pos d"], b: Float[Tensor, "n pos d"]) -> Float[Tensor, "n pos"]:
    """1 - cos(a, b) as half the squared distance of the unit vectors: no cancellation near cos = 1."""
    a, b = a.to(_work_dtype(a.dtype)), b.to(_work_dtype(b.dtype))
    unit_a = a / a.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(a.dtype).tiny)
    unit_b = b / b.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(b.dtype).tiny)
    distance: Tensor = 0.5 * (unit_a - unit_b).square().sum(dim=-1)
    return distance


def value_zeroing(
    call: BlockCall,
    key_mask: Bool[Tensor, "batch pos"] | None,
    allowed: AllowedPositions | None,
    chunk: int,
) -> Float[Tensor, "batch query_pos key_pos"]:
    """Value zeroing of one layer from how the pass called it, `chunk` (text, key) runs at a time, in the
    model's dtype and on its device."""
    hidden = _hidden(call)
    batch, pos, _ = hidden.shape
    device = hidden.device
    real = torch.ones(batch, pos, dtype=torch.bool, device=device)
    if key_mask is not None:
        real = key_mask.to(device)
    texts, keys = real.nonzero(as_tuple=True)  # one run per real key of each text
    distances = torch.zeros(batch, pos, pos, dtype=_work_dtype(hidden.dtype), device=device)
    with torch.inference_mode():
        clean = _run_for(call, torch.arange(batch, device=device), None)  # [batch, pos, d_model]
        for start in range(0, len(texts), chunk):
            t, j = texts[start : start + chunk], keys[start : start + chunk]
            changed = _run_for(call, t, j)  # [copy, pos, d_model]
            distances[t, :, j] = _cosine_distance(changed, clean[t])
        visible = real[:, :, None] & real[:, None, :]  # [batch, query_pos, key_pos]
        if allowed is not None:
            visible &= allowed.to(device).any(dim=1)  # the layer's own mask (causal, window)
        return _rows_normalized(torch.where(visible, distances, 0)).to(hidden.dtype)


def mlp_width(config: Any) -> int:
    """The width of a layer's MLP as its config names it (intermediate_size, GPT-2's n_inner, DistilBERT's
    hidden_dim), or 4 d_model."""
    for name in ("intermediate_size", "n_inner", "hidden_dim"):
        width = getattr(config, name, None)
        if width:
            return int(width)
    return 4 * int(config.hidden_size)


def run_elements(sizes: Sizes, mlp: int) -> int:
    """Numbers one run of a layer for one text holds, at most: hidden states, residuals and norms, q, k, v
    and context, scores, scaled scores and weights, the MLP's activations (up to three of its width, for
    gated MLPs) and the mask."""
    heads_d = sizes.num_heads * sizes.d_k
    return (
        sizes.seq * (6 * sizes.input_width + 4 * heads_d + 3 * mlp)
        + (3 * sizes.num_heads + 1) * sizes.seq * sizes.seq_kv
    )


def value_zeroing_chunk(sizes: Sizes, mlp: int) -> int:
    """(text, key) runs per chunk: as many as VALUE_ZEROING_BUDGET holds, at least one."""
    return max(1, min(sizes.batch * sizes.seq_kv, VALUE_ZEROING_BUDGET // run_elements(sizes, mlp)))


def value_zeroing_work(sizes: Sizes, mlp: int) -> int:
    """Numbers value zeroing computes: one run per text and key, for each returned layer."""
    return sizes.layers * sizes.batch * sizes.seq_kv * run_elements(sizes, mlp)


def flow_elements(sizes: Sizes, returned: tuple[TensorName, ...], mlp: int, streamed: bool) -> int:
    """Numbers the flow tensors of `returned` hold beyond the attention's internals: each returned layer's
    flow tensors (one layer at a time when `streamed`), and what computing one layer's holds meanwhile
    (value zeroing's chunk of runs, the vectors of norms_summed)."""
    square = sizes.batch * sizes.seq * sizes.seq_kv
    per_layer = working = 0
    if "rollout" in returned:
        per_layer += square
        working += 2 * square  # the running product, the next layer's A'
    if "norms" in returned or "norms_summed" in returned:
        working += sizes.batch * sizes.num_heads * sizes.seq_kv * sizes.d_out  # f_h(x_j)
        per_layer += sizes.elements("norms") if "norms" in returned else 0
    if "norms_summed" in returned:
        per_layer += square
        working += min(NORMS_BLOCK_ELEMENTS, square * sizes.d_out)
    if "value_zeroing" in returned:
        per_layer += square
        clean = sizes.batch * sizes.seq * sizes.input_width
        working += clean + square + value_zeroing_chunk(sizes, mlp) * run_elements(sizes, mlp)
    return working + (1 if streamed else sizes.layers) * per_layer


class Flow:
    """The flow tensors a request asks for, one layer at a time in the order of the forward pass: `step`
    every layer from 0 (the rollout needs each), `tensors` of the layers returned."""

    def __init__(
        self, returned: tuple[TensorName, ...], key_mask: Bool[Tensor, "batch pos"] | None, chunk: int
    ):
        self.asked = [name for name in FLOW_TENSOR_NAMES if name in returned]
        self.key_mask, self.chunk = key_mask, chunk
        self.rollout = Rollout(key_mask) if "rollout" in self.asked else None
        self.rolled: Tensor | None = None

    @property
    def every_layer(self) -> bool:
        """Whether every layer up to the last returned must be stepped (the rollout's product)."""
        return self.rollout is not None

    @property
    def block_calls(self) -> bool:
        """Whether the returned layers' passes must hold how the layer was called (value zeroing)."""
        return "value_zeroing" in self.asked

    def step(self, internals: AttentionInternals) -> None:
        if self.rollout is not None:
            self.rolled = self.rollout.step(internals.weights)

    def tensors(self, step: LayerPass, internals: AttentionInternals) -> dict[TensorName, Tensor]:
        """The asked flow tensors of the layer just stepped, in the dtype and on the device of `internals`."""
        tensors: dict[TensorName, Tensor] = {}
        if self.rolled is not None:
            tensors["rollout"] = self.rolled
        if "norms" in self.asked or "norms_summed" in self.asked:
            assert step.projections.w_o is not None  # every model has its W_o
            f = value_through_w_o(internals, step.projections.w_o)
            if "norms" in self.asked:
                tensors["norms"] = norms(internals, f)
            if "norms_summed" in self.asked:
                tensors["norms_summed"] = norms_summed(internals, f)
        if "value_zeroing" in self.asked:
            assert step.block_call is not None  # asked with layers(blocks=...)
            zeroing = value_zeroing(step.block_call, self.key_mask, step.allowed, self.chunk)
            weights = internals.weights
            tensors["value_zeroing"] = zeroing.to(device=weights.device, dtype=weights.dtype)
        return tensors
