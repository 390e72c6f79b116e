"""transformers' own model as the reference for an attention the service recomputes (a request that asks for
another dtype, scale or causality than the model's): every internal of every layer, in float64.

The model runs in float64 with its own eager attention; a function registered in transformers' attention
registry stands in front of it and records what the model's own modules hand their attention (q and k after
the model's projections and rotary embedding, v, the mask transformers built for the eager model, the
module's scaling and soft-cap), then calls the family's own eager_attention_forward, so that each layer's
input is the model's. Hooks on the projections record q and k before the rotary embedding. The changed
attention is then computed here, in float64, from those: q k^T, the requested scale, the model's soft-cap,
the model's mask and, if asked, a causal one, softmax, weights v, and the model's own W_o module. Nothing of
the service is used.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

REFERENCE = "reference_float64_eager"  # the attn_implementation name the reference model is loaded with

# where each family keeps its attention block's output projection (W_o), written out here rather than taken
# from the service's own table, so that the reference uses what the model really runs
W_O = {
    "bert": "encoder.layer.{}.attention.output.dense",
    "roberta": "encoder.layer.{}.attention.output.dense",
    "xlm-roberta": "encoder.layer.{}.attention.output.dense",
    "distilbert": "transformer.layer.{}.attention.out_lin",
    "modernbert": "layers.{}.attn.Wo",
    "gpt2": "h.{}.attn.c_proj",
    **{t: "layers.{}.self_attn.o_proj" for t in ("llama", "mistral", "qwen2", "gemma", "gemma2")},
}
# the modules whose outputs are q and k before the rotary embedding, [batch, pos, heads * d_k] each
# (ModernBERT: one fused [batch, pos, 3 * heads * d_k] in the order q, k, v)
PRE_ROTARY = {
    "modernbert": ("layers.{}.attn.Wqkv",),
    **{
        t: ("layers.{}.self_attn.q_proj", "layers.{}.self_attn.k_proj")
        for t in ("llama", "mistral", "qwen2", "gemma", "gemma2")
    },
}


@dataclass(frozen=True)
class Attended:
    """What one layer's attention received from the model, in float64."""

    q: Tensor  # [batch, head, query_pos, d_k], after the rotary embedding
    k: Tensor  # [batch, kv_head, key_pos, d_k]
    v: Tensor  # [batch, kv_head, key_pos, d_v]
    allowed: Tensor  # [batch or 1, 1, query_pos, key_pos], True = attend: the model's own mask
    scale: float  # the module's own
    softcap: float | None
    pre_rotary: tuple[Tensor, Tensor] | None  # q and k before the rotary embedding


_recorded: list[Attended] = []


def _recording_eager_attention(
    module: torch.nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[Tensor, Tensor]:
    """Records the layer's q, k, v, mask, scaling and soft-cap, and answers with the family's own eager
    attention (so the forward goes on as transformers' eager model)."""
    query_pos, key_pos = query.shape[-2], key.shape[-2]
    allowed = (
        torch.ones(1, 1, query_pos, key_pos, dtype=torch.bool)
        if attention_mask is None
        else attention_mask[..., :key_pos] == 0  # eager masks: 0 to attend, the dtype's minimum not to
    )
    scale = float(scaling) if scaling is not None else query.shape[-1] ** -0.5
    softcap = kwargs.get("softcap")
    _recorded.append(Attended(query, key, value, allowed, scale, softcap, None))
    own: Callable[..., tuple[Tensor, Tensor]] = sys.modules[type(module).__module__].eager_attention_forward
    context, weights = own(
        module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs
    )
    # ModernBERT's eager attention takes its softmax in float32, where the float64 mask's minimum is -inf: a
    # padded query outside every real key's window gets 0/0. Such rows are 0 here, as in the service; they are
    # padding, never compared, but their nan would reach every real row through the next layer's v (0 * nan).
    return context.nan_to_num(nan=0.0), weights


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    AttentionInterface.register(REFERENCE, _recording_eager_attention)
    AttentionMaskInterface.register(REFERENCE, ALL_MASK_ATTENTION_FUNCTIONS["eager"])


def _heads(x: Tensor, width: int) -> Tensor:
    """[batch, pos, heads * width] -> [batch, heads, pos, width]."""
    batch, pos, _ = x.shape
    return x.view(batch, pos, -1, width).transpose(1, 2)


@dataclass(frozen=True)
class ReferenceModel:
    """transformers' eager model of a folder in float64, and what its attention received for `texts`."""

    model: Any
    model_type: str
    layers: list[Attended]
    lengths: list[int]  # tokens of each text, padding excluded

    def internals(self, layer: int, scale: float | None, causal: bool) -> dict[str, np.ndarray]:
        """Every internal of `layer` with the requested `scale` (None: the module's own) and, when `causal`,
        a causal mask on top of the model's own, in float64; masked scaled scores are nan (null on the
        wire)."""
        a = self.layers[layer]
        group = a.q.shape[1] // a.k.shape[1]  # grouped-query attention: query head h reads kv head h // group
        k, v = a.k.repeat_interleave(group, dim=1), a.v.repeat_interleave(group, dim=1)
        scores = a.q @ k.transpose(-2, -1)  # [batch, head, query_pos, key_pos]
        scaled = scores * (a.scale if scale is None else scale)
        if a.softcap is not None:
            scaled = a.softcap * torch.tanh(scaled / a.softcap)
        allowed = a.allowed
        if causal:
            allowed = allowed & torch.ones(scores.shape[-2:], dtype=torch.bool).tril()
        scaled = scaled.masked_fill(~allowed, float("-inf"))
        weights = torch.softmax(scaled, dim=-1)
        context = weights @ v  # [batch, head, query_pos, d_v]
        batch, _, query_pos, _ = context.shape
        w_o = self.model.get_submodule(W_O[self.model_type].format(layer))
        with torch.no_grad():
            output = w_o(context.transpose(1, 2).reshape(batch, query_pos, -1))  # [batch, query_pos, d_out]
        found = {
            "q": a.q,
            "k": a.k,
            "v": a.v,
            "scores": scores,
            "scaled_scores": scaled.masked_fill(~allowed, float("nan")),
            "weights": weights,
            "context": context,
            "output": output,
        }
        if a.pre_rotary is not None:
            found |= {"q_pre_rotary": a.pre_rotary[0], "k_pre_rotary": a.pre_rotary[1]}
        return {name: tensor.detach().numpy() for name, tensor in found.items()}


def reference_model(folder: Path, model_type: str, texts: list[str]) -> ReferenceModel:
    """transformers' eager model of `folder` in float64 run on `texts`, padded on the right (a pad token
    borrowed from EOS where the tokenizer has none), recording each layer's attention."""
    from transformers import AutoModel, AutoTokenizer

    _register()
    model = AutoModel.from_pretrained(folder, attn_implementation=REFERENCE, dtype=torch.float64).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.padding_side = "right"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    encoded = tokenizer(texts, padding=True, return_tensors="pt")
    layers = int(model.config.num_hidden_layers)
    projected: list[Tensor] = []
    hooks = [
        model.get_submodule(name.format(layer)).register_forward_hook(
            lambda module, args, output: projected.append(output.detach())
        )
        for layer in range(layers)
        for name in PRE_ROTARY.get(model_type, ())
    ]
    _recorded.clear()
    try:
        with torch.no_grad():
            model(**encoded)
    finally:
        for hook in hooks:
            hook.remove()
    attended = list(_recorded)
    _recorded.clear()
    assert len(attended) == layers
    if projected:
        per_layer = len(projected) // layers
        for layer, a in enumerate(attended):
            outputs = projected[layer * per_layer : (layer + 1) * per_layer]
            d_k = a.q.shape[-1]
            if per_layer == 1:  # fused q, k, v
                q_pre, k_pre, _ = outputs[0].chunk(3, dim=-1)
            else:
                q_pre, k_pre = outputs
            pre = (_heads(q_pre, d_k), _heads(k_pre, d_k))
            attended[layer] = Attended(a.q, a.k, a.v, a.allowed, a.scale, a.softcap, pre)
    lengths = [int(n) for n in encoded["attention_mask"].sum(1)]
    return ReferenceModel(model, model_type, attended, lengths)
