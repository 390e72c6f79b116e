"""Hugging Face transformers' own answer for a text, to check the service's pretrained path against."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import numpy as np
import torch


def reference(
    folder: Path, texts: list[str]
) -> tuple[Any, list[torch.Tensor], torch.Tensor, list[list[str]]]:
    """Eager attention weights per layer, each attention block's W_o output, the padding mask and the
    tokens."""
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(folder, attn_implementation="eager", local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    encoded = tokenizer(texts, padding=True, return_tensors="pt")
    outputs: list[torch.Tensor] = []
    hooks = [
        layer.attention.output.dense.register_forward_hook(lambda m, i, o: outputs.append(o.detach()))
        for layer in model.encoder.layer
    ]
    with torch.no_grad():
        result = model(**encoded, output_attentions=True)
    for hook in hooks:
        hook.remove()
    # one token per position, the padded ones included, as transformers' tokenizer pads the batch
    tokens = [cast(list[str], tokenizer.convert_ids_to_tokens(ids)) for ids in encoded["input_ids"]]
    mask: torch.Tensor = encoded["attention_mask"].bool()
    return result.attentions, outputs, mask, tokens


def check_parity(response: Any, folder: Path, texts: list[str], layers: list[int]) -> None:
    """`response` (an httpx.Response or an in-process Reply) holds transformers' weights and W_o outputs for
    `texts` at `layers`, in that order, and its tokens."""
    assert response.status_code == 200, response.text
    body = response.json()
    attentions, outputs, mask, tokens = reference(folder, texts)
    assert body["tokens"] == tokens
    assert body["meta"]["lengths"] == [int(n) for n in mask.sum(1)]
    assert [entry["layer"] for entry in body["layers"]] == layers
    real = mask.numpy()  # [batch, seq]
    for entry in body["layers"]:
        index = entry["layer"]
        weights = np.asarray(entry["weights"])
        np.testing.assert_allclose(
            weights, attentions[index].numpy(), atol=1e-5, err_msg=f"weights, layer {index}"
        )
        np.testing.assert_allclose(
            np.asarray(entry["output"])[real],
            outputs[index].numpy()[real],
            atol=1e-5,
            err_msg=f"output, layer {index}",
        )
