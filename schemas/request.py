"""The request of ``POST /attend``: one input form, weight settings, attention settings."""

from __future__ import annotations

import itertools
from typing import Annotated, Literal

import numpy as np
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from schemas.axes import ALL_TENSOR_NAMES, SQUARE_TENSOR_NAMES, SUMMARY_NAMES, TENSOR_NAMES, TensorName
from schemas.describe import describe
from schemas.interventions import Generate, Interventions, Predict
from schemas.request_forms import (
    MODEL_ONLY,
    input_forms_json_schema,
    layer_json_schema,
    text_json_schema,
    weights_json_schema,
)
from schemas.request_forms import TOY_MODEL as TOY_MODEL  # re-exported: the request's constants live here
from schemas.tensor import Axes

TOY_D_MODEL = 8  # d_model of toy-mode embeddings when a request names none
DEFAULT_NUM_HEADS = 1  # heads of the explicit and toy path when a request names none

Matrix = Annotated[np.ndarray, Axes(("rows", "cols"))]
Vector = Annotated[np.ndarray, Axes(("size",))]
Mask = Annotated[np.ndarray, Axes(("batch", "seq_kv"))]
Embeddings = Annotated[np.ndarray, Axes(("seq", "d_model"), ("batch", "seq", "d_model"))]
Context = Annotated[np.ndarray, Axes(("seq_kv", "d_model"), ("batch", "seq_kv", "d_model"))]
Queries = Annotated[np.ndarray, Axes(("seq", "heads*d_k"), ("batch", "seq", "heads*d_k"))]
Keys = Annotated[np.ndarray, Axes(("seq_kv", "heads*d_k"), ("batch", "seq_kv", "heads*d_k"))]
Values = Annotated[np.ndarray, Axes(("seq_kv", "heads*d_v"), ("batch", "seq_kv", "heads*d_v"))]


def _is_index(value: object) -> bool:
    """An integer as JSON Schema counts them (2 or 2.0; no booleans); its range is checked elsewhere."""
    return (isinstance(value, int) and not isinstance(value, bool)) or (
        isinstance(value, float) and value.is_integer()
    )


def _integral(value: object) -> object:
    """JSON Schema's integer includes numbers with a zero fraction (2.0): they are read as the integer."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


INT32_MAX = 2**31 - 1  # sizes beyond it are refused as malformed; the operator's limits are far lower

# integer fields: strict (no strings, no booleans), and 2.0 is 2 as in JSON Schema; the bounds sit inside the
# type so that the JSON Schema of `Size | None` states them as minimum and maximum
Integer = Annotated[int, BeforeValidator(_integral)]
Size = Annotated[int, Field(ge=1, le=INT32_MAX), BeforeValidator(_integral)]
Seed = Annotated[int, Field(ge=0, le=2**63 - 1), BeforeValidator(_integral)]
Decimals = Annotated[int, Field(ge=0, le=15), BeforeValidator(_integral)]
TopK = Annotated[int, Field(ge=1, le=64), BeforeValidator(_integral)]
# head indexes or query positions to return; at most ATTENTION_MAX_SEQ-many fit a valid request, and the
# schema bound keeps a body of millions of indexes from being validated one by one
Index = Annotated[int, Field(ge=0, le=INT32_MAX), BeforeValidator(_integral)]
IndexList = Annotated[list[Index], Field(min_length=1, max_length=2**16)]
_STRICT = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class WeightSpec(BaseModel):
    """The projection weights: w_q, w_k, w_v all given, or all generated from `init` and `seed`."""

    model_config = _STRICT | ConfigDict(arbitrary_types_allowed=True, json_schema_extra=weights_json_schema)

    w_q: Matrix | None = Field(
        None, description="W_q: [d_model, heads*d_k] (in_out) or [heads*d_k, d_model] (out_in)."
    )
    w_k: Matrix | None = Field(
        None, description="W_k: [d_model, heads*d_k] (in_out) or [heads*d_k, d_model] (out_in)."
    )
    w_v: Matrix | None = Field(
        None, description="W_v: [d_model, heads*d_v] (in_out) or [heads*d_v, d_model] (out_in)."
    )
    w_o: Matrix | None = Field(
        None,
        description="W_o: [heads*d_v, d_out] (in_out) or [d_out, heads*d_v] (out_in). "
        "Without it the output is the heads concatenated.",
    )
    b_q: Vector | None = Field(None, description="b_q: [heads*d_k]. Default: no bias.")
    b_k: Vector | None = Field(None, description="b_k: [heads*d_k]. Default: no bias.")
    b_v: Vector | None = Field(None, description="b_v: [heads*d_v]. Default: no bias.")
    b_o: Vector | None = Field(None, description="b_o: [d_out]; needs w_o. Default: no bias.")
    layout: Literal["in_out", "out_in"] = Field(
        "in_out",
        description='How the matrices are laid out. "in_out" (default, the math layout): Q = X @ W_q with '
        'W_q of shape [d_model, heads*d_k]. "out_in": torch.nn.Linear.weight, shape [heads*d_k, d_model], '
        "Q = X @ W_q^T. A square matrix is read as in_out unless layout says otherwise.",
    )
    init: Literal["xavier_uniform", "normal", "identity"] = Field(
        "xavier_uniform",
        description="How matrices are generated when none are given: xavier_uniform (U(-a, a), "
        "a = sqrt(6 / (fan_in + fan_out))), normal (N(0, 1/d_in)), identity (ones on the main diagonal of "
        "the [d_in, d_out] matrix). Generated biases are zero.",
    )
    seed: Seed = Field(
        0,
        description="Seed of the generated weights: the same seed gives the same weights on every machine "
        "and device (drawn in float64 on the CPU, then cast and moved).",
    )
    output_projection: bool = Field(
        True,
        description="With generated weights: also generate W_o ([heads*d_v, d_model]). "
        "Ignored for explicit weights.",
    )

    @model_validator(mode="after")
    def _all_or_none(self) -> WeightSpec:
        given = [name for name in ("w_q", "w_k", "w_v") if getattr(self, name) is not None]
        if given and len(given) < 3:
            missing = sorted({"w_q", "w_k", "w_v"} - set(given))
            raise ValueError(
                f"found {', '.join(given)} without {', '.join(missing)}; "
                "expected all of w_q, w_k, w_v or none"
            )
        if not given:
            explicit = [n for n in ("w_o", "b_q", "b_k", "b_v", "b_o") if getattr(self, n) is not None]
            if explicit:
                raise ValueError(
                    f"found {', '.join(explicit)} without w_q, w_k, w_v; explicit matrices and biases "
                    "need all of w_q, w_k, w_v"
                )
        if self.b_o is not None and self.w_o is None:
            raise ValueError("found b_o without w_o; expected w_o with b_o")
        return self

    @property
    def explicit(self) -> bool:
        return self.w_q is not None


class AttendRequest(BaseModel):
    """One input form: `embeddings` (optionally with `context`), `query`/`key`/`value`, or `text`."""

    model_config = _STRICT | ConfigDict(
        arbitrary_types_allowed=True, json_schema_extra=input_forms_json_schema
    )

    embeddings: Embeddings | None = Field(
        None,
        description="Token embeddings X: [seq, d_model] or [batch, seq, d_model]. "
        "Self-attention unless `context` is given.",
    )
    context: Context | None = Field(
        None,
        description="Cross-attention source C: [seq_kv, d_model] or [batch, seq_kv, d_model]; keys and "
        "values come from it. seq_kv may differ from seq. Needs `embeddings`.",
    )
    query: Queries | None = Field(
        None, description="Q given directly: [seq, heads*d_k] or [batch, seq, heads*d_k]."
    )
    key: Keys | None = Field(
        None, description="K given directly: [seq_kv, heads*d_k] or [batch, seq_kv, heads*d_k]."
    )
    value: Values | None = Field(
        None, description="V given directly: [seq_kv, heads*d_v] or [batch, seq_kv, heads*d_v]."
    )
    text: str | list[str] | None = Field(
        None,
        json_schema_extra=text_json_schema,
        description="Text to tokenize and embed with `model`: one string, or a list (a batch, padded with "
        "the attention mask applied automatically). Returns `tokens` [batch][seq].",
    )
    model: str | None = Field(
        None,
        min_length=1,
        description="With `text`: a model name from GET /models (default: the service's default model), "
        'or "toy": whitespace tokens (characters for text without spaces) mapped to seeded embeddings of '
        "size `d_model`, then the weights of `weights`.",
    )
    layer: Integer | list[Integer] | Literal["all"] | None = Field(
        None,
        description='Pretrained models: the layer index, a list of them, or "all" (default, also for null). '
        "Results are under `layers`.",
        json_schema_extra=layer_json_schema,
    )
    truncate: bool = Field(
        False,
        description="With `text`: cut texts longer than the model's maximum positions "
        "instead of refusing them.",
    )
    d_model: Size | None = Field(
        None, description="Toy mode: size of the seeded token embeddings. Default 8."
    )
    weights: WeightSpec | None = Field(
        None,
        description="Projection weights for `embeddings`. Default: generated with xavier_uniform, seed 0.",
    )
    num_heads: Size | None = Field(
        None,
        description=f"Number of heads h. Default (null): {DEFAULT_NUM_HEADS}, or with `text` of a pretrained "
        "model the model's own (which is the only value it takes).",
    )
    d_k: Size | None = Field(
        None,
        description="Query/key size per head. Default: d_model / num_heads (from the weights when given).",
    )
    d_v: Size | None = Field(None, description="Value size per head. Default: d_k's default.")
    scale: float | None = Field(
        None, description="Multiplies the scores. Default 1/sqrt(d_k); 1 means no scaling."
    )
    causal: bool = Field(
        False,
        description="Query i attends only to keys j <= i "
        "(top-left aligned, as torch's is_causal, also when seq != seq_kv).",
    )
    attention_mask: Mask | None = Field(
        None,
        description="Padding mask [batch, seq_kv] of 0/1, 1 = attend. Combined with `causal`. "
        "A query row with no key left gets weights 0 and context 0 (never NaN).",
    )
    include: list[TensorName] | None = Field(
        None,
        description="Which tensors to return. Default: all of "
        + ", ".join(TENSOR_NAMES)
        + " (q_pre_rotary and k_pre_rotary, a rotary model's Q and K before rotation, only when named). "
        "The summaries (" + ", ".join(SUMMARY_NAMES) + ") only when named: without scores, scaled_scores "
        "and weights they are computed in blocks of queries, in memory that grows with seq, not seq^2. "
        "A model's layers also give, when named: rollout, norms, norms_summed, value_zeroing (how "
        "information flows across the layers; docs/flow.md).",
    )
    top_k: TopK = Field(
        5,
        description="With top_keys or top_weights: how many of each row's largest weights (1 to 64; at "
        "most seq_kv are returned).",
    )
    pool: Size | None = Field(
        None,
        description="With pooled_weights: the side of each block of pool x pool positions averaged. "
        "Default: the smallest that gives at most 128 blocks per axis.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description='"auto" (default) uses CUDA when present, else the CPU.'
    )
    dtype: Literal["float32", "float64", "float16", "bfloat16"] = Field(
        "float32", description="Compute precision. Default float32."
    )
    decimals: Decimals | None = Field(
        None, description="Round returned floats to this many decimals. Default: no rounding."
    )
    wire_dtype: Literal["float32", "float16", "float64"] | None = Field(
        None,
        description="Element type of the tensors in binary responses (Accept: application/x-safetensors). "
        'Default: "float32", or "float64" when `dtype` is float64, so that binary values are bit for bit '
        'those JSON carries. "float16" halves the bytes; a value past its range (65504) is a 422. '
        "JSON and NDJSON responses ignore it (use `decimals`).",
    )
    heads: IndexList | None = Field(
        None,
        description="Return only these heads (sorted, distinct indexes, each below num_heads): every "
        "returned tensor with a `head` axis keeps these entries, in this order. Default: all heads.",
    )
    queries: IndexList | None = Field(
        None,
        description="Return only these query positions (sorted, distinct indexes, each below seq): every "
        "returned tensor with a `query_pos` axis keeps these entries. Default: all positions.",
    )
    predict: Predict | None = Field(
        None,
        description="A model with a language-model head (decoders; encoders with a masked-LM head): the "
        "top-level `predictions` at these positions.",
    )
    interventions: Interventions | None = Field(
        None,
        description="A model's forward pass with these applied together (ablate, knockout, patch); the "
        "returned internals are the intervened pass's.",
    )
    clean: bool = Field(
        True,
        description="With interventions: also run the clean pass, for `output_similarity`, "
        "`predictions_clean` and `predictions.kl`.",
    )
    generate: Generate | None = Field(
        None,
        description="A decoder: append greedily generated tokens to each text, then compute the internals "
        "over prompt and generated tokens.",
    )

    @model_validator(mode="after")
    def _one_input_form(self) -> AttendRequest:
        direct = [name for name in ("query", "key", "value") if getattr(self, name) is not None]
        if self.text is not None:
            return self._text_form(direct)
        named = [
            name for name in ("model", "layer", "d_model", *MODEL_ONLY) if getattr(self, name) is not None
        ]
        if named:
            raise ValueError(f"found {', '.join(named)} without text; expected them only with `text`")
        if self.embeddings is not None and direct:
            raise ValueError(
                f"found embeddings together with {', '.join(direct)}; expected exactly one input form"
            )
        if self.embeddings is None and not direct:
            raise ValueError(
                "found no input; expected `text`, `embeddings`, or `query`, `key` and `value` together"
            )
        if direct and len(direct) < 3:
            missing = sorted({"query", "key", "value"} - set(direct))
            raise ValueError(
                f"found {', '.join(direct)} without {', '.join(missing)}; "
                "expected query, key and value together"
            )
        if self.context is not None and self.embeddings is None:
            raise ValueError("found context without embeddings; expected context only with embeddings")
        if direct and self.weights is not None:
            raise ValueError(
                "found weights with query/key/value; Q, K and V given directly take no projections"
            )
        return self

    @field_validator("heads", "queries")
    @classmethod
    def _sorted_and_distinct(cls, indexes: list[int] | None, info: ValidationInfo) -> list[int] | None:
        for position, (before, index) in enumerate(itertools.pairwise(indexes or []), start=1):
            if index <= before:
                found = "a repeat of" if index == before else "smaller than"
                # its own error type: an order JSON Schema cannot state (tests/server/schemathesis/hooks.py)
                raise PydanticCustomError(
                    "indexes_not_sorted",
                    f"found {info.field_name}[{position}] = {index}, {found} {info.field_name}"
                    f"[{position - 1}] = {before}; expected sorted, distinct indexes",
                )
        return indexes

    @field_validator("text")
    @classmethod
    def _texts_not_empty(cls, text: str | list[str] | None) -> str | list[str] | None:
        texts = [text] if isinstance(text, str) else text or []
        if text is not None and not texts:
            raise ValueError("found an empty list of texts; expected at least one text")
        for index, item in enumerate(texts):
            if not item.strip():
                where = "text" if isinstance(text, str) else f"text[{index}]"
                found = "an empty text" if not item else f"a text of only whitespace ({item!r})"
                raise ValueError(f"found {found} at {where}; expected some characters other than whitespace")
        return text

    @field_validator("layer", mode="before")
    @classmethod
    def _layer_form(cls, layer: object) -> object:
        """One message that lists the accepted forms (rather than one error per form of the union), and
        repeated layers refused as repeated heads are."""
        if layer is None or layer == "all" or _is_index(layer):
            return layer
        forms = 'expected a layer index (0, 1, ...), a list of distinct indexes, or "all"'
        if not isinstance(layer, list):
            raise ValueError(f"found layer = {describe(layer)}; {forms}")
        wrong = next((position for position, item in enumerate(layer) if not _is_index(item)), None)
        if wrong is not None:
            raise ValueError(f"found layer[{wrong}] = {describe(layer[wrong])}; {forms}")
        for position, index in enumerate(layer):
            if index in layer[:position]:
                first = layer.index(index)
                raise ValueError(
                    f"found layer[{position}] = {index}, a repeat of layer[{first}]; expected distinct layers"
                )
        return layer

    def _text_form(self, direct: list[str]) -> AttendRequest:
        others = [name for name in ("embeddings", "context", *direct) if getattr(self, name) is not None]
        if others:
            raise ValueError(f"found text together with {', '.join(others)}; expected exactly one input form")
        if self.attention_mask is not None:
            raise ValueError(
                "found attention_mask with text; the padding mask of texts is made automatically"
            )
        if self.model == TOY_MODEL:
            named = [name for name in ("layer", *MODEL_ONLY) if getattr(self, name) is not None]
            if named:
                raise ValueError(f"found {', '.join(named)} with the toy model, which has no layers")
        else:
            pretrained = [name for name in ("weights", "d_model") if getattr(self, name) is not None]
            if pretrained:
                raise ValueError(
                    f"found {', '.join(pretrained)} with a pretrained model, which brings its own "
                    f'embeddings and weights; expected them only with model "{TOY_MODEL}"'
                )
        return self

    @property
    def head_count(self) -> int:
        """num_heads of the explicit and toy path: as given, else DEFAULT_NUM_HEADS."""
        return self.num_heads if self.num_heads is not None else DEFAULT_NUM_HEADS

    @property
    def texts(self) -> list[str]:
        return [self.text] if isinstance(self.text, str) else list(self.text or [])

    @property
    def summaries(self) -> tuple[TensorName, ...]:
        """The summary names asked for, in SUMMARY_NAMES order."""
        if self.include is None:  # most requests; asked for several times per request
            return ()
        return tuple(name for name in SUMMARY_NAMES if name in self.include)

    @property
    def blocked(self) -> bool:
        """Summaries without any [query_pos, key_pos] tensor: computed in blocks of queries. Interventions
        edit each layer's whole attention (knockout its mask, ablate and patch its context), so with them the
        summaries come from whole weights, under the n x n limits."""
        return (
            bool(self.summaries)
            and self.interventions is None
            and not any(name in self.returned for name in SQUARE_TENSOR_NAMES)
        )

    @property
    def returned(self) -> tuple[TensorName, ...]:
        if self.include is None:
            return TENSOR_NAMES
        return tuple(name for name in ALL_TENSOR_NAMES if name in self.include)
