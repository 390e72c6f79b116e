"""The wire contract's names as the client types them (docs/api.md): request settings, `meta`, `GET /models`.

The service's own pydantic models (schemas/ in the service's repository) are the source; this package cannot
import them (it installs without the service), so tests/client/test_wire_names.py checks that these names
stay equal to theirs."""

from __future__ import annotations

from typing import Literal, TypedDict

import numpy.typing as npt

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
# returned only when `include` names them: a rotary model's q and k before the rotation
ROTARY_TENSOR_NAMES: tuple[TensorName, ...] = ("q_pre_rotary", "k_pre_rotary")
# returned only when `include` names them: each head's weights summarized (answers for long inputs, computed
# without whole [query_pos, key_pos] matrices when no scores or weights are asked for)
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
# the tensors of integers (key positions): int64 arrays
INTEGER_TENSORS: frozenset[TensorName] = frozenset({"top_keys"})
# returned only when `include` names them, for a model: how information flows across its layers
FLOW_TENSOR_NAMES: tuple[TensorName, ...] = ("rollout", "norms", "norms_summed", "value_zeroing")
ALL_TENSOR_NAMES: tuple[TensorName, ...] = (
    TENSOR_NAMES + ROTARY_TENSOR_NAMES + SUMMARY_NAMES + FLOW_TENSOR_NAMES
)
Device = Literal["auto", "cpu", "cuda"]
Dtype = Literal["float32", "float64", "float16", "bfloat16"]
WireDtype = Literal["float32", "float16", "float64"]  # binary formats only: this client reads JSON


class Predict(TypedDict, total=False):
    """`predict`: positions (default: each text's last token; a masked LM's mask tokens), top_k (default
    5), targets (vocabulary entries as the tokenizer writes them)."""

    positions: list[int]
    top_k: int
    targets: list[str]


# {"ablate": {"layer": l, "heads": [...], "with": "zero" | "mean"}} ("with" is a Python keyword)
Ablate = TypedDict("Ablate", {"layer": int, "heads": list[int], "with": Literal["zero", "mean"]}, total=False)


class Knockout(TypedDict, total=False):
    layer: int
    heads: list[int]
    queries: list[int]
    keys: list[int]


class Patch(TypedDict, total=False):
    layer: int
    heads: list[int]
    text: str


class Intervention(TypedDict, total=False):
    """Exactly one of `ablate`, `knockout`, `patch`."""

    ablate: Ablate
    knockout: Knockout
    patch: Patch


class Generate(TypedDict):
    max_new_tokens: int


class Weights(TypedDict, total=False):
    """The request's `weights`: w_q, w_k, w_v all given (with optional w_o and biases), or generated from
    `init` and `seed`. Matrices are anything numpy can turn into an array (lists, arrays, CPU tensors)."""

    w_q: npt.ArrayLike
    w_k: npt.ArrayLike
    w_v: npt.ArrayLike
    w_o: npt.ArrayLike
    b_q: npt.ArrayLike
    b_k: npt.ArrayLike
    b_v: npt.ArrayLike
    b_o: npt.ArrayLike
    layout: Literal["in_out", "out_in"]
    init: Literal["xavier_uniform", "normal", "identity"]
    seed: int
    output_projection: bool


class _MetaAlways(TypedDict):
    device: str
    dtype: Dtype
    scale: float
    num_heads: int
    num_kv_heads: int
    d_k: int
    d_v: int
    d_model: int | None
    d_out: int
    batch: int
    seq: int
    seq_kv: int
    causal: bool
    masked: bool
    weights_source: Literal["explicit", "generated", "none", "model"]
    layout: Literal["in_out", "out_in"] | None
    init: str | None
    seed: int | None
    output_projection: bool
    torch_version: str
    axes: dict[str, list[str]]
    shapes: dict[str, list[int]]
    elapsed_ms: float


class Meta(_MetaAlways, total=False):
    """The response's `meta`: what was computed and how (keys a newer service adds are there too)."""

    kv_head_of: list[int] | None
    sliding_window: list[int | None] | None
    softcap: float | None
    positions: str | None
    model: str | None
    model_revision: str | None  # a Hugging Face Hub model's commit
    layer: list[int] | None
    lengths: list[int] | None
    padded: bool | None
    truncated: bool | None
    decimals: int | None
    heads: list[int] | None
    queries: list[int] | None
    wire_dtype: WireDtype | None
    prompt_lengths: list[int] | None
    generated: list[int] | None
    predicted_positions: list[list[int]] | None
    top_k: int | None
    pool: int | None
    rank: int | None
    query_blocks: int | None
    key_blocks: int | None
    blocked: bool | None


class ModelInfo(TypedDict):
    """One entry of `GET /models`: a pretrained model, or the toy mode (`toy` true). Every key is sent; a size
    is None where the model has none (the toy mode) or its config does not say."""

    name: str
    toy: bool
    loaded: bool
    layers: int | None
    heads: int | None
    family: str | None
    kind: Literal["encoder", "decoder"] | None
    positions: Literal["absolute", "sinusoidal", "rotary"] | None
    kv_heads: int | None
    head_size: int | None
    window: int | None
    windowed_layers: list[int] | None
    softcap: float | None
    parameters: int | None
    dtype: Dtype | None
    d_model: int | None
    vocab_size: int | None
    max_length: int | None
    lm_head: Literal["causal", "masked"] | None
    load_seconds: float | None
    parameter_bytes: int | None
    error: str | None
    hub: str | None  # a Hugging Face Hub model: its id
    revision: str | None  # and the commit its files were pinned at
    max_d_model: int | None
    about: str | None


class ModelList(TypedDict):
    """`GET /models`: the model used for `text` when a request names none, and every model."""

    default: str
    models: list[ModelInfo]
