"""The response of ``POST /attend`` and the body of every error answer.

The service encodes responses straight from tensors (see service/compute/encoding.py); these models are the
documented contract, and the tests validate real responses against them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.axes import TENSOR_MEANING, TensorName, shape_text
from schemas.interventions import (
    OUTPUT_SIMILARITY_AXES,
    OUTPUT_SIMILARITY_MEANING,
    PREDICTION_MEANING,
    PredictionName,
    prediction_shape_text,
)

# null stands for a value JSON cannot hold: -inf at masked entries of scaled_scores, or an overflow in
# float16/bfloat16 arithmetic.
Float4D = list[list[list[list[float | None]]]]
Float3D = list[list[list[float | None]]]
Float2D = list[list[float | None]]
Int4D = list[list[list[list[int]]]]


def _tensor_field(name: TensorName) -> Any:
    """The field of a returned tensor, described from the axes table."""
    return Field(None, description=f"{TENSOR_MEANING[name]}: {shape_text(name)}")


class Meta(BaseModel):
    """What was computed and how: every size, the settings in force, the axes and shapes of each tensor."""

    model_config = ConfigDict(extra="forbid")

    device: str = Field(description='Where it was computed, e.g. "cpu" or "cuda:0".')
    dtype: Literal["float32", "float64", "float16", "bfloat16"]
    scale: float = Field(description="The factor applied to the scores.")
    num_heads: int = Field(description="Heads: the length of the `head` axis.")
    num_kv_heads: int = Field(
        description="Key/value heads: the length of the `kv_head` axis of k and v under grouped-query "
        "attention (fewer than num_heads); equal to num_heads otherwise."
    )
    kv_head_of: list[int] | None = Field(
        None,
        description="Under grouped-query attention: for each query head, the kv head it reads "
        "(query heads h with kv_head_of[h] == g share kv head g).",
    )
    d_k: int = Field(description="Query/key size per head: the length of the `d_k` axis.")
    d_v: int = Field(description="Value size per head: the length of the `d_v` axis.")
    d_model: int | None = Field(
        description="Size of the input embeddings; null when Q, K, V were given directly."
    )
    d_out: int = Field(description="The length of the `d_out` axis (last axis of `output`).")
    batch: int = Field(description="The length of the `batch` axis.")
    seq: int = Field(description="Queries: the length of the `query_pos` axis.")
    seq_kv: int = Field(description="Keys and values: the length of the `key_pos` axis.")
    causal: bool = Field(
        description="Whether queries attend only to keys at or before them (always, for a decoder model)."
    )
    sliding_window: list[int | None] | None = Field(
        None,
        description="With a model that has sliding-window layers: for each layer of `layer`, in that order, "
        "its window (null: all keys). A causal model's query sees itself and the window - 1 keys before it; "
        "ModernBERT's (local_attention) is centred on the query, half on each side.",
    )
    softcap: float | None = Field(
        None, description="With a model that caps its scores: the cap c of scaled_scores = c * tanh(. / c)."
    )
    positions: str | None = Field(
        None, description="With a model: its positional scheme (absolute, sinusoidal, rotary)."
    )
    masked: bool = Field(
        description="Whether any key position was masked (attention_mask, padding or causal)."
    )
    weights_source: Literal["explicit", "generated", "none", "model"] = Field(
        description="explicit: given in the request; generated: from init and seed; "
        "none: Q, K, V given directly; model: the pretrained model's own."
    )
    layout: Literal["in_out", "out_in"] | None = Field(description="Layout of the explicit matrices.")
    init: str | None = Field(description="Init of the generated weights.")
    seed: int | None = Field(description="Seed of the generated weights (and of toy embeddings).")
    output_projection: bool = Field(description="Whether W_o was applied.")
    model: str | None = Field(None, description='The model of `text` ("toy" for the toy mode).')
    model_revision: str | None = Field(
        None, description="With a Hugging Face Hub model: the commit its files came from (GET /models)."
    )
    layer: list[int] | None = Field(None, description="A pretrained model's layers, in the order returned.")
    lengths: list[int] | None = Field(
        None,
        description="With `text`: each text's number of tokens; positions from it to `seq` are padding "
        "(masked as keys).",
    )
    padded: bool | None = Field(
        None, description="With `text`: whether a text was padded to the longest of the batch."
    )
    truncated: bool | None = Field(
        None,
        description="With a pretrained model: whether a text over the model's maximum length was cut "
        "(truncate: true).",
    )
    torch_version: str
    decimals: int | None = Field(None, description="Rounding of the returned numbers, if any.")
    heads: list[int] | None = Field(
        None, description="The heads returned (the request's `heads`); null: all of them."
    )
    queries: list[int] | None = Field(
        None, description="The query positions returned (the request's `queries`); null: all of them."
    )
    wire_dtype: Literal["float32", "float16", "float64"] | None = Field(
        None, description="Element type of the tensors of a binary response; null for JSON and NDJSON."
    )
    prompt_lengths: list[int] | None = Field(
        None, description="With `generate`: each prompt's token count (its generated tokens follow it)."
    )
    generated: list[int] | None = Field(
        None,
        description="With `generate`: each text's generated token count (fewer than max_new_tokens when its "
        "end-of-text token came; that token is counted and kept).",
    )
    predicted_positions: list[list[int]] | None = Field(
        None, description="With `predict`: each text's positions, the `position` axis of `predictions`."
    )
    axes: dict[str, list[str]] = Field(description="Axis names of each returned tensor.")
    shapes: dict[str, list[int]] = Field(
        description="Shape of each returned tensor (with `heads`, `queries`: the lengths of the selection)."
    )
    elapsed_ms: float = Field(description="Time spent computing and encoding, in milliseconds.")
    top_k: int | None = Field(None, description="With summaries: the `top_k` in force.")
    pool: int | None = Field(None, description="With summaries: the `pool` in force (its default resolved).")
    rank: int | None = Field(
        None, description="With summaries: the length of the `rank` axis, min(top_k, seq_kv)."
    )
    query_blocks: int | None = Field(
        None, description="With summaries: the length of the `query_block` axis, ceil(seq / pool)."
    )
    key_blocks: int | None = Field(
        None, description="With summaries: the length of the `key_block` axis, ceil(seq_kv / pool)."
    )
    blocked: bool | None = Field(
        None,
        description="With summaries: whether they were computed in blocks of queries, never holding a "
        "whole [query_pos, key_pos] matrix (no scores, scaled_scores or weights asked for).",
    )


class Tensors(BaseModel):
    """The tensors `include` asked for, each with all its axes."""

    q: Float4D | None = _tensor_field("q")
    k: Float4D | None = _tensor_field("k")
    v: Float4D | None = _tensor_field("v")
    scores: Float4D | None = _tensor_field("scores")
    scaled_scores: Float4D | None = _tensor_field("scaled_scores")
    weights: Float4D | None = _tensor_field("weights")
    context: Float4D | None = _tensor_field("context")
    output: Float3D | None = _tensor_field("output")
    q_pre_rotary: Float4D | None = _tensor_field("q_pre_rotary")
    k_pre_rotary: Float4D | None = _tensor_field("k_pre_rotary")
    entropy: Float3D | None = _tensor_field("entropy")
    top_keys: Int4D | None = _tensor_field("top_keys")
    top_weights: Float4D | None = _tensor_field("top_weights")
    received: Float3D | None = _tensor_field("received")
    pooled_weights: Float4D | None = _tensor_field("pooled_weights")
    previous_token_score: Float2D | None = _tensor_field("previous_token_score")
    duplicate_token_score: Float2D | None = _tensor_field("duplicate_token_score")
    induction_score: Float2D | None = _tensor_field("induction_score")
    sink_score: Float2D | None = _tensor_field("sink_score")
    rollout: Float3D | None = _tensor_field("rollout")
    norms: Float4D | None = _tensor_field("norms")
    norms_summed: Float3D | None = _tensor_field("norms_summed")
    value_zeroing: Float3D | None = _tensor_field("value_zeroing")


class LayerTensors(Tensors):
    """The tensors of one layer of a pretrained model (the ones `include` asked for)."""

    layer: int


def _prediction_field(name: PredictionName) -> Any:
    return Field(None, description=f"{PREDICTION_MEANING[name]}: {prediction_shape_text(name)}")


class Predictions(BaseModel):
    """A model's predictions at the positions `predict` named (`meta.predicted_positions`)."""

    top_tokens: list[list[list[str]]] | None = _prediction_field("top_tokens")
    top_probs: Float3D | None = _prediction_field("top_probs")
    target_logprobs: Float3D | None = _prediction_field("target_logprobs")
    kl: list[list[float | None]] | None = _prediction_field("kl")


class AttendResponse(Tensors):
    """Every tensor carries all its axes. Masked entries of `scaled_scores` are null (JSON has no -inf).
    With a pretrained model the tensors are under `layers`, one object per requested layer."""

    layers: list[LayerTensors] | None = Field(
        None, description="With a pretrained model: one entry per layer."
    )
    tokens: list[list[str]] | None = Field(
        None,
        description="With `text`: the tokens of each text [batch][seq], one per position of the tensors: "
        "shorter texts of a batch end in the pad token ([PAD]; `meta.lengths` gives the real lengths).",
    )
    predictions: Predictions | None = Field(
        None, description="With `predict`: the (intervened) pass's predictions."
    )
    predictions_clean: Predictions | None = Field(
        None, description="With `predict`, `interventions` and `clean`: the clean pass's predictions."
    )
    output_similarity: list[list[float | None]] | None = Field(
        None,
        description=f"{OUTPUT_SIMILARITY_MEANING}: [{', '.join(OUTPUT_SIMILARITY_AXES)}]",
    )
    meta: Meta


class ErrorItem(BaseModel):
    loc: list[str | int] = Field(description='Where in the request, e.g. ["body", "weights", "w_q"].')
    msg: str = Field(description="What was found and what was expected.")
    type: str = Field(description='The kind of problem, e.g. "value_error", "missing", "tensor_ragged".')


class ErrorBody(BaseModel):
    """The body of every 4xx and 5xx answer: `detail` says what went wrong; a 413 adds the limit, its value
    and the estimate."""

    detail: str | list[ErrorItem] = Field(
        description="422: one item per problem (the field, what was found, what was expected); "
        "other statuses: one message."
    )
    limit: str | None = Field(None, description="413: the setting that was exceeded, e.g. ATTENTION_MAX_SEQ.")
    maximum: int | None = Field(None, description="413: that setting's value.")
    estimate: int | None = Field(None, description="413: what this request needs of it.")
