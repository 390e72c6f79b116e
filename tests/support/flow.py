"""References for rollout, norms and value zeroing written from the papers' formulas, computed from
transformers' own eager models (their attentions via output_attentions, their modules' weights, forward
hooks), never from the service's outputs (tests/compute/test_flow.py, the client's and OIP's tests).

- rollout (Abnar & Zuidema 2020): A'_m = 0.5 mean_h(W_m) + 0.5 I, rows renormalized; R_l = A'_l ... A'_0
- norms (Kobayashi et al. 2020): ||w_ij f_h(x_j)||, f_h(x_j) = (x_j W_v^h + b_v^h) W_o^h; summed over heads
  inside the norm for norms_summed
- value zeroing (Mohebbi et al. 2023): one forward of the whole model per key j with the value projection's
  output at j set to 0 in layer l (a hook), the cosine distance of each token's layer-l output to the clean
  one, each row divided by its sum
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

FLOW = ["rollout", "norms", "norms_summed", "value_zeroing"]
DECODERS = ("gpt2", "llama", "mistral", "qwen2", "gemma", "gemma2")


@dataclass(frozen=True)
class Parts:
    """Where a family keeps what the references read, written out here (not the service's table): each
    layer's block, its value projection (and the slice of its output that is V), and W_o as [d_out, heads*d_v]
    (nn.Linear's layout)."""

    block: str
    value: str
    value_slice: int | None  # GPT-2's c_attn outputs q, k, v: V is the third of its width
    w_o: str
    w_o_in_out: bool  # GPT-2's Conv1D keeps its weight as [in, out]


PARTS = {
    "bert": Parts("encoder.layer.{}", "encoder.layer.{}.attention.self.value", None,
                  "encoder.layer.{}.attention.output.dense", False),
    "gpt2": Parts("h.{}", "h.{}.attn.c_attn", 2, "h.{}.attn.c_proj", True),
    "llama": Parts("layers.{}", "layers.{}.self_attn.v_proj", None, "layers.{}.self_attn.o_proj", False),
    "distilbert": Parts("transformer.layer.{}", "transformer.layer.{}.attention.v_lin", None,
                        "transformer.layer.{}.attention.out_lin", False),
    "modernbert": Parts("layers.{}", "layers.{}.attn.Wqkv", 2, "layers.{}.attn.Wo", False),
    **{
        family: Parts("layers.{}", "layers.{}.self_attn.v_proj", None, "layers.{}.self_attn.o_proj", False)
        for family in ("llama", "mistral", "qwen2", "gemma", "gemma2")
    },
}  # fmt: skip


class Eager:
    """transformers' eager model of a folder, and the inputs of a right-padded batch."""

    def __init__(self, folder: Path, family: str, texts: list[str], dtype: torch.dtype):
        from transformers import AutoModel, AutoTokenizer

        self.family, self.parts = family, PARTS[family]
        self.model = AutoModel.from_pretrained(folder, attn_implementation="eager", dtype=dtype).eval()
        tokenizer = AutoTokenizer.from_pretrained(folder)
        tokenizer.padding_side = "right"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.inputs = tokenizer(texts, padding=True, return_tensors="pt")
        self.real = self.inputs["attention_mask"].bool().numpy()  # [batch, pos]
        config = self.model.config
        self.heads = config.num_attention_heads
        self.kv_heads = getattr(config, "num_key_value_heads", None) or self.heads
        self.window = getattr(config, "sliding_window", None) if family == "mistral" else None

    def visible(self) -> np.ndarray:
        """[batch, query_pos, key_pos]: key j is a real token that query i (a real token) attends (the
        windows of Mistral, whose every layer has one; the other families' windowed layers are left to the
        reference's own distances, which are 0 where a key is out of a query's window)."""
        pos = self.real.shape[1]
        i, j = np.arange(pos)[:, None], np.arange(pos)[None, :]
        allowed = np.ones((pos, pos), dtype=bool)
        if self.family in DECODERS:
            allowed &= j <= i
        if self.window is not None:
            allowed &= j > i - self.window
        visible: np.ndarray = self.real[:, :, None] & self.real[:, None, :] & allowed
        return visible

    def reachable(self) -> np.ndarray:
        """[batch, query_pos, key_pos]: key j is a real token that query i may reach through the layers
        (before it, for a decoder; windows narrow one layer, not the path across layers)."""
        pos = self.real.shape[1]
        causal = np.tri(pos, dtype=bool) if self.family in DECODERS else np.ones((pos, pos), dtype=bool)
        reachable: np.ndarray = self.real[:, None, :] & causal[None]
        return reachable

    def run(self, layer: int, zero_key: int | None = None) -> tuple[Any, np.ndarray, np.ndarray]:
        """One forward: the attentions, layer `layer`'s value vectors [batch, pos, kv_heads*d_v] and its
        block's output [batch, pos, d_model]; with `zero_key`, that position's value set to 0 in layer
        `layer` (every head) by a hook on the value projection."""
        parts, seen = self.parts, {}

        def value_hook(module: Any, args: Any, output: torch.Tensor) -> torch.Tensor:
            width = output.shape[-1] // 3 if parts.value_slice is not None else output.shape[-1]
            start = width * (parts.value_slice or 0)
            seen["v"] = output[..., start : start + width].clone()
            if zero_key is None:
                return output
            changed = output.clone()
            changed[:, zero_key, start : start + width] = 0
            return changed

        def block_hook(module: Any, args: Any, output: Any) -> None:
            seen["out"] = (output[0] if isinstance(output, tuple) else output).clone()

        hooks = [
            self.model.get_submodule(parts.value.format(layer)).register_forward_hook(value_hook),
            self.model.get_submodule(parts.block.format(layer)).register_forward_hook(block_hook),
        ]
        try:
            with torch.no_grad():
                result = self.model(**self.inputs, output_attentions=True)
        finally:
            for hook in hooks:
                hook.remove()
        return result.attentions, seen["v"].double().numpy(), seen["out"].double().numpy()

    def w_o(self, layer: int) -> np.ndarray:
        """W_o as [d_out, heads*d_v]."""
        weight = self.model.get_submodule(self.parts.w_o.format(layer)).weight.detach().double().numpy()
        w_o: np.ndarray = weight.T if self.parts.w_o_in_out else weight
        return w_o


def rollout_reference(attentions: Any, real: np.ndarray, layer: int) -> np.ndarray:
    rolled = None
    for weights in attentions[: layer + 1]:
        mean = weights.double().numpy().mean(axis=1)  # [batch, query_pos, key_pos]
        a = 0.5 * mean + 0.5 * np.eye(mean.shape[-1])[None]
        a = a / a.sum(axis=-1, keepdims=True)
        rolled = a if rolled is None else a @ rolled
    assert rolled is not None
    result: np.ndarray = rolled
    return result


def value_vectors(eager: Eager, v: np.ndarray, layer: int) -> np.ndarray:
    """f_h(x_j) = v_j^h W_o^h, [batch, head, key_pos, d_out], query head h reading kv head h // group."""
    batch, pos, _ = v.shape
    v = v.reshape(batch, pos, eager.kv_heads, -1)
    d_v = v.shape[-1]
    w_o = eager.w_o(layer)  # [d_out, heads*d_v]
    group = eager.heads // eager.kv_heads
    return np.stack(
        [v[:, :, h // group] @ w_o[:, h * d_v : (h + 1) * d_v].T for h in range(eager.heads)], axis=1
    )


def value_zeroing_reference(eager: Eager, layer: int) -> np.ndarray:
    """One forward per zeroed key (every text of the batch at once: the texts are independent)."""
    _, _, clean = eager.run(layer)
    batch, pos, _ = clean.shape
    distances = np.zeros((batch, pos, pos))
    for j in range(pos):
        _, _, changed = eager.run(layer, zero_key=j)
        cosine = (changed * clean).sum(-1) / (
            np.linalg.norm(changed, axis=-1) * np.linalg.norm(clean, axis=-1)
        )
        distances[:, :, j] = 1 - cosine
    distances = np.where(eager.visible(), distances, 0)
    sums = distances.sum(axis=-1, keepdims=True)
    normalized: np.ndarray = np.divide(distances, sums, out=np.zeros_like(distances), where=sums > 0)
    return normalized
