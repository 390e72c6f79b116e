"""Step 3 of a request: multi-head scaled dot-product attention that keeps every internal.

For queries X [batch, query_pos, d_model] and a source C [batch, key_pos, d_model] (C = X in
self-attention), with h heads:

    Q = X W_q + b_q,   K = C W_k + b_k,   V = C W_v + b_v        split into h heads
    scores        = Q K^T                                         per head
    scaled_scores = scores * scale, masked entries -inf           scale defaults to 1/sqrt(d_k)
    weights       = softmax(scaled_scores) over key_pos           a row with no key left is all 0
    context       = weights V                                     per head
    output        = concat(heads) W_o + b_o                       without W_o: concat(heads)

It equals ``torch.nn.MultiheadAttention(..., average_attn_weights=False)`` (weights, output) and
``torch.nn.functional.scaled_dot_product_attention`` (context), which the tests check.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from service.weights import Projections


class AttentionInternals(NamedTuple):
    q: Tensor  # [batch, head, query_pos, d_k]
    k: Tensor  # [batch, head, key_pos, d_k]
    v: Tensor  # [batch, head, key_pos, d_v]
    scores: Tensor  # [batch, head, query_pos, key_pos]
    scaled_scores: Tensor  # [batch, head, query_pos, key_pos], -inf where masked
    weights: Tensor  # [batch, head, query_pos, key_pos]
    context: Tensor  # [batch, head, query_pos, d_v]
    output: Tensor  # [batch, query_pos, d_out]


def _project(x: Tensor, weight: Tensor | None, bias: Tensor | None) -> Tensor:
    """x @ weight + bias for weight in the in_out layout [d_in, d_out]; no weight means no projection."""
    if weight is None:
        return x
    return x @ weight if bias is None else x @ weight + bias


class MultiHeadAttention(nn.Module):
    """Arguments:

    - num_heads: h; scale: the factor applied to the scores
    - projections: the weights in the in_out layout, on the device and in the dtype of the inputs:
      w_q, w_k [d_model, heads*d_k]; w_v [d_model, heads*d_v]; w_o [heads*d_v, d_out]; biases b_q, b_k
      [heads*d_k], b_v [heads*d_v], b_o [d_out]. A missing matrix is no projection (Q/K/V given directly,
      or the output without W_o); a missing bias is no bias.
    """

    def __init__(self, num_heads: int, scale: float, projections: Projections):
        super().__init__()
        self.num_heads, self.scale, self.projections = num_heads, scale, projections

    def split_heads(self, x: Tensor) -> Tensor:
        batch, pos, _ = x.shape  # [batch, pos, heads*d]
        return x.view(batch, pos, self.num_heads, -1).transpose(1, 2)  # [batch, head, pos, d]

    def forward(self, x: Tensor, source: Tensor, value_source: Tensor | None = None,
                allowed: Tensor | None = None) -> AttentionInternals:
        """x: [batch, query_pos, d_model]; source: [batch, key_pos, d_model] (C, or K when given directly);
        value_source: V given directly [batch, key_pos, heads*d_v], else V comes from source;
        allowed: [batch, 1 or head, query_pos, key_pos] bool, True = attend, or None for no mask."""
        batch, query_pos, _ = x.shape
        p = self.projections
        q = self.split_heads(_project(x, p.w_q, p.b_q))  # [batch, head, query_pos, d_k]
        k = self.split_heads(_project(source, p.w_k, p.b_k))  # [batch, head, key_pos, d_k]
        v_in = source if value_source is None else value_source  # [batch, key_pos, d_model or heads*d_v]
        v = self.split_heads(_project(v_in, p.w_v, p.b_v))  # [batch, head, key_pos, d_v]
        scores = q @ k.transpose(-2, -1)  # [batch, head, query_pos, key_pos]
        scaled_scores = scores * self.scale  # [batch, head, query_pos, key_pos]
        if allowed is not None:
            scaled_scores = scaled_scores.masked_fill(~allowed, float("-inf"))
        weights = F.softmax(scaled_scores, dim=-1)  # [batch, head, query_pos, key_pos]
        if allowed is not None:  # a row with every key masked is 0/0 in softmax: define it as 0
            weights = weights.masked_fill(~allowed.any(dim=-1, keepdim=True), 0.0)
        context = weights @ v  # [batch, head, query_pos, d_v]
        heads = context.transpose(1, 2).reshape(batch, query_pos, -1)  # [batch, query_pos, heads*d_v]
        output = _project(heads, p.w_o, p.b_o)  # [batch, query_pos, d_out]
        return AttentionInternals(q, k, v, scores, scaled_scores, weights, context, output)


def allowed_positions(key_mask: Tensor | None, causal: bool, query_pos: int, key_pos: int,
                      device: torch.device) -> Tensor | None:
    """The positions each query may attend, [batch or 1, 1, query_pos, key_pos] bool, from a padding mask
    [batch, key_pos] (True = attend) and causality (key j <= query i, aligned top-left), or None."""
    allowed = None
    if key_mask is not None:
        allowed = key_mask[:, None, None, :]  # [batch, 1, 1, key_pos]
    if causal:
        lower = torch.ones(query_pos, key_pos, dtype=torch.bool, device=device).tril()  # [query_pos, key_pos]
        allowed = lower[None, None] if allowed is None else allowed & lower
    return allowed
