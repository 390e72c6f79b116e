"""The answers of GET /healthz, GET /readyz and GET /models (their errors are schemas.response.ErrorBody)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class Health(BaseModel):
    status: Literal["ok"] = Field(description="The process is alive.")


class Readiness(BaseModel):
    status: Literal["ready"] = Field(description="Every compute process is up: requests are computed.")
    device: str = Field(description='Where the compute processes compute, e.g. "cpu" or "cuda:0".')
    torch_version: str


class ModelInfo(BaseModel):
    """One model for `text`: a pretrained one from its config, or the toy mode. Sizes are null where the model
    has none (the toy mode) or its config does not say."""

    name: str = Field(description="The value of the request's `model`.")
    toy: bool = Field(description="Whether this is the toy mode (seeded embeddings, the request's weights).")
    loaded: bool = Field(description="Whether it is in memory (false: loaded on first use, or unreadable).")
    layers: int | None = Field(None, description="Number of layers: `layer` takes 0 to layers - 1.")
    heads: int | None = Field(None, description="Heads per layer (the only num_heads it takes).")
    family: str | None = Field(None, description="The config's model_type: bert, gpt2, llama, ...")
    kind: Literal["encoder", "decoder"] | None = Field(
        None, description="encoder (bidirectional) or decoder (causal: each token sees those before it)."
    )
    positions: Literal["absolute", "sinusoidal", "rotary"] | None = Field(
        None, description="Positional scheme: learned absolute, sinusoidal, or rotary (q and k rotated)."
    )
    kv_heads: int | None = Field(
        None, description="Key/value heads: fewer than heads under grouped-query attention."
    )
    head_size: int | None = Field(None, description="d_k = d_v of each head.")
    window: int | None = Field(
        None, description="The sliding window of its windowed layers (null: every layer sees every key)."
    )
    windowed_layers: list[int] | None = Field(None, description="The layers that attend within `window`.")
    softcap: float | None = Field(None, description="The cap c of its soft-capped scores, c tanh(s / c).")
    parameters: int | None = Field(None, description="Numbers in its weights files.")
    dtype: Literal["float32", "bfloat16", "float16", "float64"] | None = Field(
        None, description="The dtype its weights are loaded and its forward runs in (ATTENTION_MODELS)."
    )
    d_model: int | None = Field(None, description="Hidden size (toy mode: the default d_model).")
    vocab_size: int | None = Field(None, description="Size of the tokenizer's vocabulary.")
    max_length: int | None = Field(None, description="Most tokens per text, [CLS] and [SEP] included.")
    lm_head: Literal["causal", "masked"] | None = Field(
        None,
        description="Its language-model head, when its folder has one (`predict`; causal: `generate`).",
    )
    load_seconds: float | None = Field(None, description="How long loading it took.")
    parameter_bytes: int | None = Field(None, description="Bytes of its parameters in memory.")
    error: str | None = Field(None, description="Why a model that is not loaded cannot be read.")
    hub: str | None = Field(None, description="A Hugging Face Hub model: its id (ATTENTION_MODELS' `hub`).")
    revision: str | None = Field(
        None, description="A Hugging Face Hub model: the commit its files were fetched and pinned at."
    )
    max_d_model: int | None = Field(None, description="Toy mode: the largest d_model a request may ask.")
    about: str | None = Field(None, description="Toy mode: what it does.")


class ModelList(BaseModel):
    default: str = Field(description="The model of `text` when a request names none.")
    models: list[ModelInfo]
