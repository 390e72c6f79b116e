"""The request fields for a model's causes, not only its correlations: `predict` (next-token or masked-token
predictions from the model's language-model head), `interventions` (head ablation, attention knockout,
activation patching, applied in the model's own forward pass), `clean` and `generate`; and the names, axes
and meanings of the top-level tensors they add to a response (`predictions`, `predictions_clean`,
`output_similarity`), the one source for their descriptions and `meta.axes`."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from schemas.request_forms import intervention_json_schema


def _integral(value: object) -> object:
    return int(value) if isinstance(value, float) and value.is_integer() else value


_STRICT = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
Index = Annotated[int, Field(ge=0, le=2**31 - 1), BeforeValidator(_integral)]
Indexes = Annotated[list[Index], Field(min_length=1, max_length=2**16)]
TopK = Annotated[int, Field(ge=1, le=64), BeforeValidator(_integral)]
NewTokens = Annotated[int, Field(ge=1, le=256), BeforeValidator(_integral)]
MAX_TARGETS = 256
MAX_INTERVENTIONS = 64
MAX_PATCH_CHARS = 2**16


class Predict(BaseModel):
    """Which positions to predict at, how many top tokens, and which vocabulary entries to score."""

    model_config = _STRICT

    positions: Indexes | None = Field(
        None,
        description="Token positions to predict at, one list for every text of the batch. Default: each "
        "text's last real token (a decoder: the next token), or each text's mask tokens (a masked-LM "
        "encoder; every text must then hold as many).",
    )
    top_k: TopK = Field(5, description="How many of the most probable tokens to return per position.")
    targets: list[str] | None = Field(
        None,
        max_length=MAX_TARGETS,
        description='Vocabulary entries as the tokenizer writes them ("Ġfish" for a byte-level BPE); each '
        "must be one token of the vocabulary. Their log-probabilities are `target_logprobs`.",
    )


class Ablate(BaseModel):
    model_config = _STRICT | ConfigDict(populate_by_name=True)

    layer: Index
    heads: Indexes
    with_: Literal["zero", "mean"] = Field(
        "zero",
        alias="with",
        description='"zero": each head\'s context replaced by zeros before W_o; "mean": by its mean over the '
        "real query positions of that text.",
    )


class Knockout(BaseModel):
    model_config = _STRICT

    layer: Index
    heads: Indexes | None = Field(None, description="Default: every head.")
    queries: Indexes
    keys: Indexes


class Patch(BaseModel):
    model_config = _STRICT

    layer: Index
    heads: Indexes
    text: str = Field(
        min_length=1,
        max_length=MAX_PATCH_CHARS,
        description="The source text: each head's context is replaced by the one the model computes for it "
        "(a clean pass). Its token count must equal every text's of the request.",
    )


InterventionKind = Literal["ablate", "knockout", "patch"]


class Intervention(BaseModel):
    """Exactly one of `ablate`, `knockout`, `patch`."""

    model_config = _STRICT | ConfigDict(json_schema_extra=intervention_json_schema)

    ablate: Ablate | None = Field(None, description="Replace heads' context by zeros or its mean.")
    knockout: Knockout | None = Field(
        None,
        description="Set the scaled scores from `queries` to `keys` to -inf before the softmax (Geva et al. "
        "2023); a row with every key knocked out has weights 0.",
    )
    patch: Patch | None = Field(
        None, description="Replace heads' context by the one computed for another text (activation patching)."
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> Intervention:
        given = [name for name in ("ablate", "knockout", "patch") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"found {given or 'none'}; expected exactly one of ablate, knockout, patch")
        return self

    @property
    def kind(self) -> InterventionKind:
        return "ablate" if self.ablate else "knockout" if self.knockout else "patch"

    @property
    def spec(self) -> Ablate | Knockout | Patch:
        spec = self.ablate or self.knockout or self.patch
        assert spec is not None  # _exactly_one
        return spec


Interventions = Annotated[list[Intervention], Field(min_length=1, max_length=MAX_INTERVENTIONS)]


class Generate(BaseModel):
    model_config = _STRICT

    max_new_tokens: NewTokens = Field(
        description="Greedily generated tokens appended to each text (fewer when the end-of-text token "
        "comes)."
    )


PredictionName = Literal["top_tokens", "top_probs", "target_logprobs", "kl"]
PREDICTION_AXES: dict[PredictionName, tuple[str, ...]] = {
    "top_tokens": ("batch", "position", "rank"),
    "top_probs": ("batch", "position", "rank"),
    "target_logprobs": ("batch", "position", "target"),
    "kl": ("batch", "position"),
}
PREDICTION_MEANING: dict[PredictionName, str] = {
    "top_tokens": "the top_k most probable tokens at each predicted position, as the tokenizer writes them",
    "top_probs": "their probabilities",
    "target_logprobs": "the natural-log probability of each of `predict.targets`",
    "kl": "with interventions: KL(clean || intervened) of the two distributions, in nats",
}
OUTPUT_SIMILARITY_AXES = ("batch", "query_pos")
OUTPUT_SIMILARITY_MEANING = (
    "with interventions: the cosine similarity of each token's last hidden state (the model's final output, "
    "after its final norm) between the clean and the intervened pass"
)


def prediction_shape_text(name: PredictionName) -> str:
    return "[" + ", ".join(PREDICTION_AXES[name]) + "]"
