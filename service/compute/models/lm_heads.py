"""A model's language-model head, when its folder has one: a causal LM (config.architectures names a
`...ForCausalLM` or `...LMHeadModel`) or an encoder with a masked-LM head (`...ForMaskedLM`). The model is
then loaded with its head; the service runs the base model (whose attention is the service's) and applies
the head to the final hidden states of the positions asked for only, as each family's own forward does
(the head's transform, norm and decoder; Gemma 2's final soft-cap)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor

HeadKind = Literal["causal", "masked"]
Logits = Callable[[Float[Tensor, "*batch d_model"]], Float[Tensor, "*batch vocab"]]


def head_kind(config: Any) -> HeadKind | None:
    """What head the folder's checkpoint was saved with, from config.architectures."""
    for architecture in getattr(config, "architectures", None) or ():
        if architecture.endswith(("ForCausalLM", "LMHeadModel")):
            return "causal"
        if architecture.endswith("ForMaskedLM"):
            return "masked"
    return None


def _softcapped(head: Logits, cap: float | None) -> Logits:
    if cap is None:
        return head
    return lambda hidden: torch.tanh(head(hidden) / cap) * cap


def _logits_function(model: Any) -> Logits:
    """The head of a loaded ...ForCausalLM / ...ForMaskedLM, as its forward applies it to the base model's
    last_hidden_state."""
    model_type = model.config.model_type
    if model_type == "bert":
        return model.cls  # type: ignore[no-any-return]
    if model_type == "distilbert":
        return lambda h: model.vocab_projector(
            model.vocab_layer_norm(model.activation(model.vocab_transform(h)))
        )
    if model_type == "modernbert":
        return lambda h: model.decoder(model.head(h))
    if model_type == "gemma2":
        return _softcapped(model.lm_head, getattr(model.config, "final_logit_softcapping", None))
    return model.lm_head  # type: ignore[no-any-return]  # gpt2, llama, mistral, qwen2, gemma, roberta, xlm-roberta


@dataclass(frozen=True)
class LanguageModelHead:
    kind: HeadKind
    logits: Logits  # final hidden states to logits over the vocabulary
    model: Any  # the ...ForCausalLM / ...ForMaskedLM (generation runs it whole)

    @classmethod
    def of(cls, model: Any, kind: HeadKind) -> LanguageModelHead:
        return cls(kind, _logits_function(model), model)


def auto_class(kind: HeadKind | None) -> Any:
    """The transformers Auto class that loads a folder with this head (AutoModel without one)."""
    import transformers

    if kind == "causal":
        return transformers.AutoModelForCausalLM
    if kind == "masked":
        return transformers.AutoModelForMaskedLM
    return transformers.AutoModel
