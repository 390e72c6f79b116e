"""The model families served, and where each keeps its attention: the module that calls the attention
function (the service's, service/compute/models/forward.py), its W_q, W_k, W_v, W_o and biases, and what a
request's meta and GET /models say about it (encoder or decoder, positional scheme, kv heads, window, cap).

Every family here routes its attention through transformers' attention-function registry
(AttentionInterface: `attn_implementation` names the function) with the projected, rotated, un-repeated
q, k, v, the model's own mask (causal, sliding window, padding), scaling and soft-cap; the rest of each
layer (embeddings, norms, residuals, MLP) is the model's own code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from torch import nn

from service.compute.attention import Projections
from service.errors import ModelError

Kind = Literal["encoder", "decoder"]


@dataclass(frozen=True)
class LayerParts:
    """One layer's attention: the module that receives its input (hidden_states, and the rotary cos and
    sin), the module whose output is the attention block's output (W_o, before the residual), the
    weights in the in_out layout, and the whole layer (attention, residuals, norms, MLP) that holds them."""

    attention: nn.Module
    output: nn.Module
    projections: Projections
    block: nn.Module


def _linears(q: nn.Linear, k: nn.Linear, v: nn.Linear, o: nn.Linear) -> Projections:
    """nn.Linear weights ([out, in]) turned into the in_out layout."""
    linears = {"q": q, "k": k, "v": v, "o": o}
    return Projections(
        **{f"w_{n}": m.weight.detach().T for n, m in linears.items()},
        **{f"b_{n}": None if m.bias is None else m.bias.detach() for n, m in linears.items()},
    )


def _bert_layers(model: Any) -> list[LayerParts]:
    return [
        LayerParts(
            block.attention.self,
            block.attention.output.dense,
            _linears(
                block.attention.self.query,
                block.attention.self.key,
                block.attention.self.value,
                block.attention.output.dense,
            ),
            block,
        )
        for block in model.encoder.layer
    ]


def _distilbert_layers(model: Any) -> list[LayerParts]:
    return [
        LayerParts(a, a.out_lin, _linears(a.q_lin, a.k_lin, a.v_lin, a.out_lin), block)
        for block, a in ((block, block.attention) for block in model.transformer.layer)
    ]


def _modernbert_layers(model: Any) -> list[LayerParts]:
    parts = []
    for block in model.layers:
        attn = block.attn
        q, k, v = attn.Wqkv.weight.detach().chunk(3, dim=0)  # Wqkv: [3 * d_model, d_model], q then k then v
        bq, bk, bv = (None,) * 3 if attn.Wqkv.bias is None else attn.Wqkv.bias.detach().chunk(3)
        wo = attn.Wo
        projections = Projections(
            w_q=q.T, w_k=k.T, w_v=v.T, w_o=wo.weight.detach().T, b_q=bq, b_k=bk, b_v=bv,
            b_o=None if wo.bias is None else wo.bias.detach(),
        )  # fmt: skip
        parts.append(LayerParts(attn, wo, projections, block))
    return parts


def _gpt2_layers(model: Any) -> list[LayerParts]:
    parts = []
    for block in model.h:
        attn = block.attn
        # Conv1D keeps its weight in the in_out layout already: c_attn [d_model, 3 * d_model], q then k then v
        w_q, w_k, w_v = attn.c_attn.weight.detach().chunk(3, dim=1)
        b_q, b_k, b_v = attn.c_attn.bias.detach().chunk(3)
        projections = Projections(
            w_q=w_q, w_k=w_k, w_v=w_v, w_o=attn.c_proj.weight.detach(), b_q=b_q, b_k=b_k, b_v=b_v,
            b_o=attn.c_proj.bias.detach(),
        )  # fmt: skip
        parts.append(LayerParts(attn, attn.c_proj, projections, block))
    return parts


def _llama_layers(model: Any) -> list[LayerParts]:
    return [
        LayerParts(a, a.o_proj, _linears(a.q_proj, a.k_proj, a.v_proj, a.o_proj), block)
        for block, a in ((block, block.self_attn) for block in model.layers)
    ]


def _absolute_unless_relative(config: Any) -> str:
    return str(getattr(config, "position_embedding_type", None) or "absolute")


@dataclass(frozen=True)
class Family:
    kind: Kind
    layers: Callable[[Any], list[LayerParts]]
    positions: Callable[[Any], str]
    # positions a text may have: some families reserve position slots (RoBERTa counts from padding_idx + 1)
    max_length: Callable[[Any], int] = lambda config: int(config.max_position_embeddings)
    # what the base model applies after its last layer to give last_hidden_state (None: nothing)
    final_norm: Callable[[Any], nn.Module | None] = lambda model: None


def _norm_named_norm(model: Any) -> Any:
    return model.norm


def _roberta_max_length(config: Any) -> int:
    return int(config.max_position_embeddings) - int(config.pad_token_id) - 1


FAMILIES: dict[str, Family] = {
    "bert": Family("encoder", _bert_layers, _absolute_unless_relative),
    "roberta": Family("encoder", _bert_layers, _absolute_unless_relative, _roberta_max_length),
    "xlm-roberta": Family("encoder", _bert_layers, _absolute_unless_relative, _roberta_max_length),
    "distilbert": Family(
        "encoder",
        _distilbert_layers,
        lambda config: "sinusoidal" if config.sinusoidal_pos_embds else "absolute",
    ),
    "modernbert": Family(
        "encoder", _modernbert_layers, lambda config: "rotary", final_norm=lambda model: model.final_norm
    ),
    "gpt2": Family("decoder", _gpt2_layers, lambda config: "absolute", final_norm=lambda model: model.ln_f),
    "llama": Family("decoder", _llama_layers, lambda config: "rotary", final_norm=_norm_named_norm),
    "mistral": Family("decoder", _llama_layers, lambda config: "rotary", final_norm=_norm_named_norm),
    "qwen2": Family("decoder", _llama_layers, lambda config: "rotary", final_norm=_norm_named_norm),
    "gemma": Family("decoder", _llama_layers, lambda config: "rotary", final_norm=_norm_named_norm),
    "gemma2": Family("decoder", _llama_layers, lambda config: "rotary", final_norm=_norm_named_norm),
}
SUPPORTED_TYPES = tuple(FAMILIES)


def family_of(name: str, config: Any) -> Family:
    """The family of a model's config, or a ModelError that says what was found and what is supported."""
    family = FAMILIES.get(config.model_type)
    supported = f"supported: model_type {', '.join(SUPPORTED_TYPES)}"
    if family is None:
        raise ModelError(f"model {name!r}: found model_type {config.model_type!r}; {supported}")
    if family.kind == "encoder":
        positions = family.positions(config)
        decoder = bool(getattr(config, "is_decoder", False))
        if positions not in ("absolute", "sinusoidal", "rotary") or decoder:
            raise ModelError(
                f"model {name!r}: found model_type {config.model_type!r}, position_embedding_type "
                f"{positions!r}, is_decoder {decoder}; {supported}, encoders with absolute positions, "
                "not as a decoder"
            )
    if config.model_type == "gpt2" and getattr(config, "scale_attn_by_inverse_layer_idx", False):
        raise ModelError(
            f"model {name!r}: found scale_attn_by_inverse_layer_idx true (a scale per layer); {supported} "
            "with one scale for every layer"
        )
    bidirectional = getattr(config, "is_causal", True) is False or getattr(
        config, "use_bidirectional_attention", False
    )
    if family.kind == "decoder" and bidirectional:
        raise ModelError(f"model {name!r}: found a decoder made bidirectional; {supported} as trained")
    return family


def num_kv_heads(config: Any) -> int:
    return int(getattr(config, "num_key_value_heads", None) or config.num_attention_heads)


def head_size(config: Any) -> int:
    return int(getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads)


def layer_windows(config: Any) -> list[int | None]:
    """Each layer's sliding window as the config gives it (null: the layer attends to all keys the mask
    allows). Mistral: every layer when sliding_window is set; Qwen2, Gemma 2, ModernBERT: the layers whose
    layer_types entry is sliding_attention (ModernBERT's window is local_attention, half on each side)."""
    layers = int(config.num_hidden_layers)
    window: int | None = (
        int(config.local_attention)
        if config.model_type == "modernbert"
        else getattr(config, "sliding_window", None)
    )
    if window is None:
        return [None] * layers
    types = getattr(config, "layer_types", None)
    if types is None:
        return [int(window)] * layers if config.model_type == "mistral" else [None] * layers
    return [int(window) if kind == "sliding_attention" else None for kind in types]


def softcap(config: Any) -> float | None:
    cap = getattr(config, "attn_logit_softcapping", None)
    return None if cap is None else float(cap)


def model_scale(config: Any, parts: LayerParts) -> float:
    """The scale the model applies to the scores: its attention module's own (GPT-2 1/sqrt(d_head) or 1,
    Gemma 2 query_pre_attn_scalar^-1/2), 1/sqrt(head size) where the module keeps none (ModernBERT)."""
    scaling = getattr(parts.attention, "scaling", None)
    return float(scaling) if scaling is not None else head_size(config) ** -0.5
