"""The response of ``POST /attend`` and the error bodies.

The service encodes responses straight from tensors (see service/encoding.py); these models are the
documented contract, and the tests validate real responses against them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# null stands for a value JSON cannot hold: -inf at masked entries of scaled_scores, or an overflow in
# float16/bfloat16 arithmetic.
Float4D = list[list[list[list[float | None]]]]
Float3D = list[list[list[float | None]]]

TENSOR_AXES: dict[str, tuple[str, ...]] = {
    "q": ("batch", "head", "query_pos", "d_k"),
    "k": ("batch", "head", "key_pos", "d_k"),
    "v": ("batch", "head", "key_pos", "d_v"),
    "scores": ("batch", "head", "query_pos", "key_pos"),
    "scaled_scores": ("batch", "head", "query_pos", "key_pos"),
    "weights": ("batch", "head", "query_pos", "key_pos"),
    "context": ("batch", "head", "query_pos", "d_v"),
    "output": ("batch", "query_pos", "d_out"),
}


class Meta(BaseModel):
    model_config = ConfigDict(extra="allow")

    device: str = Field(description='Where it was computed, e.g. "cpu" or "cuda:0".')
    dtype: Literal["float32", "float64", "float16", "bfloat16"]
    scale: float = Field(description="The factor applied to the scores.")
    num_heads: int
    d_k: int
    d_v: int
    d_model: int | None = Field(description="Size of the input embeddings; null when Q, K, V were given directly.")
    d_out: int = Field(description="Last axis of `output`.")
    batch: int
    seq: int
    seq_kv: int
    causal: bool
    masked: bool = Field(description="Whether any key position was masked (attention_mask or causal).")
    weights_source: Literal["explicit", "generated", "none", "model"] = Field(
        description="explicit: given in the request; generated: from init and seed; none: Q, K, V given directly; "
        "model: the pretrained model's own."
    )
    layout: Literal["in_out", "out_in"] | None = Field(description="Layout of the explicit matrices.")
    init: str | None = Field(description="Init of the generated weights.")
    seed: int | None = Field(description="Seed of the generated weights.")
    output_projection: bool = Field(description="Whether W_o was applied.")
    model: str | None = None
    layer: int | list[int] | None = None
    torch_version: str
    elapsed_ms: float = Field(description="Time spent computing and encoding, in milliseconds.")
    axes: dict[str, list[str]] = Field(description="Axis names of each returned tensor.")
    shapes: dict[str, list[int]] = Field(description="Shape of each returned tensor.")
    decimals: int | None = None


class LayerTensors(BaseModel):
    """The tensors of one layer of a pretrained model (the ones `include` asked for)."""

    layer: int
    q: Float4D | None = None
    k: Float4D | None = None
    v: Float4D | None = None
    scores: Float4D | None = None
    scaled_scores: Float4D | None = None
    weights: Float4D | None = None
    context: Float4D | None = None
    output: Float3D | None = Field(None, description="concat(heads) W_o + b_o, before the residual and LayerNorm")


class AttendResponse(BaseModel):
    """Every tensor carries all its axes. Masked entries of `scaled_scores` are null (JSON has no -inf).
    With a pretrained model the tensors are under `layers`, one object per requested layer."""

    q: Float4D | None = Field(None, description="[batch, head, query_pos, d_k]")
    k: Float4D | None = Field(None, description="[batch, head, key_pos, d_k]")
    v: Float4D | None = Field(None, description="[batch, head, key_pos, d_v]")
    scores: Float4D | None = Field(None, description="Q K^T: [batch, head, query_pos, key_pos]")
    scaled_scores: Float4D | None = Field(
        None, description="scores * scale, masked entries null: [batch, head, query_pos, key_pos]"
    )
    weights: Float4D | None = Field(None, description="softmax rows (sum 1, or all 0 if fully masked): [batch, head, query_pos, key_pos]")
    context: Float4D | None = Field(None, description="weights V per head: [batch, head, query_pos, d_v]")
    output: Float3D | None = Field(None, description="concat(heads) W_o + b_o: [batch, query_pos, d_out]")
    layers: list[LayerTensors] | None = Field(None, description="With a pretrained model: one entry per layer.")
    tokens: list[list[str]] | None = Field(None, description="With `text`: the tokens of each text [batch][seq].")
    meta: Meta


class ErrorItem(BaseModel):
    loc: list[str | int] = Field(description='Where in the request, e.g. ["body", "weights", "w_q"].')
    msg: str = Field(description="What was found and what was expected.")
    type: str


class ErrorResponse(BaseModel):
    detail: list[ErrorItem]


class LimitError(BaseModel):
    detail: str = Field(description="Which limit, its value and the estimate for this request.")
    limit: str
    maximum: int
    estimate: int
