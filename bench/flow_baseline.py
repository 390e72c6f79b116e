"""The naive route to rollout, norms and value zeroing that the benchmark compares against: what one writes
first from the papers with transformers and numpy. The eager model with output_attentions and a hook on each
layer's value projection; the rollout, the norms and their sum over heads in numpy; value zeroing as one
forward of the whole model per layer and zeroed key (a hook zeroes that key's value), the cosine distance of
each token's layer output from the clean one."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

FLOW = ("rollout", "norms", "norms_summed", "value_zeroing")


def _forward(model: Any, inputs: Any, layer: int | None = None, zero_key: int | None = None) -> Any:
    """The model's outputs with attentions, each layer's value vectors and block outputs; with `layer` and
    `zero_key`, that key's value set to 0 in that layer."""
    values: list[np.ndarray] = []
    blocks: list[np.ndarray] = []

    def value_hook(index: int) -> Any:
        def hook(module: Any, args: Any, output: torch.Tensor) -> torch.Tensor:
            if index == layer and zero_key is not None:
                output = output.clone()
                output[:, zero_key] = 0
            values.append(output[0].numpy())
            return output

        return hook

    def block_hook(module: Any, args: Any, output: Any) -> None:
        blocks.append((output[0] if isinstance(output, tuple) else output)[0].numpy())

    hooks = []
    for index, block in enumerate(model.encoder.layer):
        hooks.append(block.attention.self.value.register_forward_hook(value_hook(index)))
        hooks.append(block.register_forward_hook(block_hook))
    try:
        with torch.no_grad():
            result = model(**inputs, output_attentions=True)
    finally:
        for hook in hooks:
            hook.remove()
    return result, values, blocks


def flow_layers(model: Any, tokenizer: Any, text: str) -> list[dict[str, Any]]:
    """Every layer's rollout, norms, norms_summed and value_zeroing for one text (a BERT-family model)."""
    inputs = tokenizer(text, return_tensors="pt")
    result, values, clean = _forward(model, inputs)
    heads = model.config.num_attention_heads
    rolled = None
    layers = []
    for index, attentions in enumerate(result.attentions):
        weights = attentions[0].numpy()  # [head, query, key]
        n = weights.shape[-1]
        a = 0.5 * weights.mean(axis=0) + 0.5 * np.eye(n)
        a = a / a.sum(axis=-1, keepdims=True)
        rolled = a if rolled is None else a @ rolled
        dense = model.encoder.layer[index].attention.output.dense.weight.detach().numpy()  # [d, heads*d_v]
        v = values[index].reshape(n, heads, -1)  # [key, head, d_v]
        d_v = v.shape[-1]
        f = np.stack([v[:, h] @ dense[:, h * d_v : (h + 1) * d_v].T for h in range(heads)])  # [h, key, d]
        norms = weights * np.linalg.norm(f, axis=-1)[:, None, :]
        summed = np.linalg.norm(np.einsum("hqk,hkd->qkd", weights, f), axis=-1)
        zeroing = np.zeros((n, n))
        for key in range(n):
            _, _, changed = _forward(model, inputs, index, key)
            # in float64: 1 - cos of two float32 vectors this close loses most of its digits
            out, base = changed[index].astype(np.float64), clean[index].astype(np.float64)
            cosine = (out * base).sum(-1) / (np.linalg.norm(out, axis=-1) * np.linalg.norm(base, axis=-1))
            zeroing[:, key] = 1 - cosine
        zeroing = zeroing / zeroing.sum(axis=-1, keepdims=True)
        layers.append(
            {
                "rollout": rolled.tolist(),
                "norms": norms.tolist(),
                "norms_summed": summed.tolist(),
                "value_zeroing": zeroing.tolist(),
            }
        )
    return layers
