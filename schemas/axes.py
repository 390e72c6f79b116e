"""The one source for tensor names and axes: every returned tensor's axes, and which size of `meta` is the
length of each axis. Shapes, the 413 estimates, `meta.axes`/`meta.shapes`, the response field descriptions
and the code's shape comments all use these names.

The two position axes are `query_pos` (length `meta.seq`: the queries, one per token of X) and `key_pos`
(length `meta.seq_kv`: the keys and values, one per token of C, which is X in self-attention). With
grouped-query attention (a model with fewer key/value heads than query heads) `k`, `v` and `k_pre_rotary`
have the axis `kv_head` (length `meta.num_kv_heads`) instead of `head`; query head h reads kv head
h // (num_heads / num_kv_heads). The summaries' own axes: `rank` (length `meta.rank`, min(top_k, seq_kv)),
`query_block` and `key_block` (lengths `meta.query_blocks` and `meta.key_blocks`: ceil(seq / pool) and
ceil(seq_kv / pool)).
"""

from __future__ import annotations

from typing import Literal

TensorName = Literal[
    "q", "k", "v", "scores", "scaled_scores", "weights", "context", "output", "q_pre_rotary", "k_pre_rotary",
    "entropy", "top_keys", "top_weights", "received", "pooled_weights", "previous_token_score",
    "duplicate_token_score", "induction_score", "sink_score", "rollout", "norms", "norms_summed",
    "value_zeroing",
]  # fmt: skip
# returned when a request has no `include`
TENSOR_NAMES: tuple[TensorName, ...] = (
    "q",
    "k",
    "v",
    "scores",
    "scaled_scores",
    "weights",
    "context",
    "output",
)
# returned only when `include` names them: a rotary model's projections before the rotation
ROTARY_TENSOR_NAMES: tuple[TensorName, ...] = ("q_pre_rotary", "k_pre_rotary")
# returned only when `include` names them: reductions of each head's weights (docs/summaries.md), computed
# in blocks of queries when no [query_pos, key_pos] tensor is asked for
SUMMARY_NAMES: tuple[TensorName, ...] = (
    "entropy",
    "top_keys",
    "top_weights",
    "received",
    "pooled_weights",
    "previous_token_score",
    "duplicate_token_score",
    "induction_score",
    "sink_score",
)
# the summaries that compare token ids: only for `text`
TOKEN_SCORE_NAMES: tuple[TensorName, ...] = ("duplicate_token_score", "induction_score")
# the summaries with integer elements (key positions)
INTEGER_TENSORS: frozenset[TensorName] = frozenset({"top_keys"})
# returned only when `include` names them, for a model: how information flows across its layers
FLOW_TENSOR_NAMES: tuple[TensorName, ...] = ("rollout", "norms", "norms_summed", "value_zeroing")
# the tensors with a [query_pos, key_pos] matrix (per head or not): asking for one means n x n memory
SQUARE_TENSOR_NAMES: tuple[TensorName, ...] = ("scores", "scaled_scores", "weights", *FLOW_TENSOR_NAMES)
ALL_TENSOR_NAMES: tuple[TensorName, ...] = (
    TENSOR_NAMES + ROTARY_TENSOR_NAMES + SUMMARY_NAMES + FLOW_TENSOR_NAMES
)

TENSOR_AXES: dict[TensorName, tuple[str, ...]] = {
    "q": ("batch", "head", "query_pos", "d_k"),
    "k": ("batch", "head", "key_pos", "d_k"),
    "v": ("batch", "head", "key_pos", "d_v"),
    "scores": ("batch", "head", "query_pos", "key_pos"),
    "scaled_scores": ("batch", "head", "query_pos", "key_pos"),
    "weights": ("batch", "head", "query_pos", "key_pos"),
    "context": ("batch", "head", "query_pos", "d_v"),
    "output": ("batch", "query_pos", "d_out"),
    "q_pre_rotary": ("batch", "head", "query_pos", "d_k"),
    "k_pre_rotary": ("batch", "head", "key_pos", "d_k"),
    "entropy": ("batch", "head", "query_pos"),
    "top_keys": ("batch", "head", "query_pos", "rank"),
    "top_weights": ("batch", "head", "query_pos", "rank"),
    "received": ("batch", "head", "key_pos"),
    "pooled_weights": ("batch", "head", "query_block", "key_block"),
    "previous_token_score": ("batch", "head"),
    "duplicate_token_score": ("batch", "head"),
    "induction_score": ("batch", "head"),
    "sink_score": ("batch", "head"),
    "rollout": ("batch", "query_pos", "key_pos"),
    "norms": ("batch", "head", "query_pos", "key_pos"),
    "norms_summed": ("batch", "query_pos", "key_pos"),
    "value_zeroing": ("batch", "query_pos", "key_pos"),
}
# the tensors with one entry per key/value head: their `head` axis is `kv_head` under grouped-query attention
KV_TENSORS: frozenset[TensorName] = frozenset({"k", "v", "k_pre_rotary"})

# the field of `meta` (and of the compute side's Sizes) that gives each axis's length
AXIS_LENGTH: dict[str, str] = {
    "batch": "batch",
    "head": "num_heads",
    "kv_head": "num_kv_heads",
    "query_pos": "seq",
    "key_pos": "seq_kv",
    "d_k": "d_k",
    "d_v": "d_v",
    "d_out": "d_out",
    "rank": "rank",
    "query_block": "query_blocks",
    "key_block": "key_blocks",
}

TENSOR_MEANING: dict[TensorName, str] = {
    "q": "Q, one vector per query and head (after the rotary embedding, for a rotary model)",
    "k": "K, one vector per key and head, or per kv_head under grouped-query attention (after the rotary "
    "embedding, for a rotary model)",
    "v": "V, one vector per key and head, or per kv_head under grouped-query attention",
    "scores": "Q K^T, the raw dot products (each query head with its kv head)",
    "scaled_scores": "scores * scale (soft-capped when the model caps them: cap * tanh(. / cap)), masked "
    "entries null (-inf)",
    "weights": "softmax of each row of scaled_scores (sums to 1, or all 0 if every key is masked)",
    "context": "weights V, per head",
    "output": "concat(heads) W_o + b_o (the heads concatenated without W_o)",
    "q_pre_rotary": "a rotary model's Q before the rotary embedding (only when `include` names it)",
    "k_pre_rotary": "a rotary model's K before the rotary embedding, per kv_head under grouped-query "
    "attention (only when `include` names it)",
    "entropy": "-sum_j w_ij ln w_ij of each row of weights, in nats (0 for a fully masked row)",
    "top_keys": "the key positions of the `top_k` largest weights of each row, largest first, ties to the "
    "lower position (masked keys, weight 0, fill a row with fewer visible keys); integers",
    "top_weights": "the weights at top_keys",
    "received": "sum_i w_ij over the real query positions: the attention each key receives",
    "pooled_weights": "mean of the weights over blocks of `pool` x `pool` positions (over the real "
    "query-key pairs of each block)",
    "previous_token_score": "TransformerLens' detect_head (mul): the share of the weight of the real "
    "queries on the key just before them (j = i - 1)",
    "duplicate_token_score": "TransformerLens' detect_head (mul): the share of the weight on earlier keys "
    "holding the query's token id (text only)",
    "induction_score": "TransformerLens' detect_head (mul): the share of the weight on keys j <= i whose "
    "previous token j - 1 holds the query's token id (text only)",
    "sink_score": "mean over the real query positions of the weight on key position 0",
    "rollout": "attention rollout (Abnar & Zuidema 2020) through layers 0 to this one: the product of each "
    "layer's 0.5 mean_h(weights) + 0.5 I, rows renormalized (only when `include` names it; models)",
    "norms": "norm-based attention (Kobayashi et al. 2020): ||w_ij f_h(x_j)|| with f_h(x_j) = v_j^h W_o^h, "
    "key j's value in head h (bias included) times head h's rows of W_o (only when `include` names it; "
    "models)",
    "norms_summed": "||sum_h w^h_ij f_h(x_j)||, the heads' contributions summed (only when `include` names "
    "it; models)",
    "value_zeroing": "value zeroing (Mohebbi et al. 2023): cosine distance between token i's layer output "
    "with and without key j's value (zeroed in every head; the whole layer run again), each row divided by "
    "its sum; padding 0 (only when `include` names it; models)",
}


def tensor_axes(name: TensorName, grouped: bool = False) -> tuple[str, ...]:
    """The axes of `name`; `grouped`: fewer key/value heads than query heads (k, v then have `kv_head`)."""
    axes = TENSOR_AXES[name]
    if grouped and name in KV_TENSORS:
        return tuple("kv_head" if axis == "head" else axis for axis in axes)
    return axes


def shape_text(name: TensorName) -> str:
    """e.g. "[batch, head, query_pos, d_k]" (with "head or kv_head" where grouped-query attention has it)."""
    axes = ["head or kv_head" if a == "head" and name in KV_TENSORS else a for a in TENSOR_AXES[name]]
    return "[" + ", ".join(axes) + "]"
