"""Tiny random models of every family saved with their language-model head, as transformers saves a
...ForCausalLM (decoders) or a ...ForMaskedLM (encoders, whose tokenizer then has a mask token "<mask>"):
config.json names the architecture, and the safetensors hold the head (tied to the embeddings where the
family ties it). The configs and tokenizers are those of families.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from devtools.compute import InProcess
from devtools.tokenizer import train_tokenizer
from tests.support.families import MAX_POSITIONS, SENTENCES, TEMPLATES, _configs

DECODER_TYPES = ("gpt2", "llama", "mistral", "qwen2", "gemma", "gemma2")
MASK = "<mask>"


def lm_class(model_type: str) -> Any:
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

    return AutoModelForCausalLM if model_type in DECODER_TYPES else AutoModelForMaskedLM


def save_lm_model(model_type: str, folder: Path, seed: int = 0) -> Path:
    """A tiny random `model_type` model with its language-model head, and its tokenizer, in `folder`."""
    import torch

    tokenizer = train_tokenizer(TEMPLATES[model_type], SENTENCES, MAX_POSITIONS)
    if model_type not in DECODER_TYPES:
        tokenizer.add_special_tokens({"mask_token": MASK})
    config = _configs()[model_type](len(tokenizer))
    torch.manual_seed(seed)
    model = lm_class(model_type).from_config(config)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.3)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def post(compute: InProcess, body: dict[str, Any]) -> Any:
    """The JSON of a 200 answer."""
    response = compute.post(body)
    assert response.status_code == 200, response.text
    return response.json()


def error(compute: InProcess, body: dict[str, Any]) -> dict[str, Any]:
    """The one item of a 422 answer."""
    response = compute.post(body)
    assert response.status_code == 422, response.text
    (item,) = response.json()["detail"]
    return item  # type: ignore[no-any-return]
