"""The one source for tensor names and axes: every returned tensor's axes, and which size of `meta` is the
length of each axis. Shapes, the 413 estimates, `meta.axes`/`meta.shapes`, the response field descriptions
and the code's shape comments all use these names.

The two position axes are `query_pos` (length `meta.seq`: the queries, one per token of X) and `key_pos`
(length `meta.seq_kv`: the keys and values, one per token of C, which is X in self-attention).
"""

from __future__ import annotations

from typing import Literal

TensorName = Literal["q", "k", "v", "scores", "scaled_scores", "weights", "context", "output"]
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

TENSOR_AXES: dict[TensorName, tuple[str, ...]] = {
    "q": ("batch", "head", "query_pos", "d_k"),
    "k": ("batch", "head", "key_pos", "d_k"),
    "v": ("batch", "head", "key_pos", "d_v"),
    "scores": ("batch", "head", "query_pos", "key_pos"),
    "scaled_scores": ("batch", "head", "query_pos", "key_pos"),
    "weights": ("batch", "head", "query_pos", "key_pos"),
    "context": ("batch", "head", "query_pos", "d_v"),
    "output": ("batch", "query_pos", "d_out"),
}

# the field of `meta` (and of the compute side's Sizes) that gives each axis's length
AXIS_LENGTH: dict[str, str] = {
    "batch": "batch",
    "head": "num_heads",
    "query_pos": "seq",
    "key_pos": "seq_kv",
    "d_k": "d_k",
    "d_v": "d_v",
    "d_out": "d_out",
}

TENSOR_MEANING: dict[TensorName, str] = {
    "q": "Q, one vector per query and head",
    "k": "K, one vector per key and head",
    "v": "V, one vector per key and head",
    "scores": "Q K^T, the raw dot products",
    "scaled_scores": "scores * scale, masked entries null (-inf)",
    "weights": "softmax of each row of scaled_scores (sums to 1, or all 0 if every key is masked)",
    "context": "weights V, per head",
    "output": "concat(heads) W_o + b_o (the heads concatenated without W_o)",
}


def shape_text(name: TensorName) -> str:
    """e.g. "[batch, head, query_pos, d_k]"."""
    return "[" + ", ".join(TENSOR_AXES[name]) + "]"
