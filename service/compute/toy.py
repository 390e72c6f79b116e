"""The toy mode of `text`: whitespace tokens mapped to seeded N(0, 1) embeddings, no pretrained model."""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from service.compute.inputs import Extent, Inputs

TOY_PAD_TOKEN = "[PAD]"  # the token of the padded positions of a batch of toy texts, as BERT writes it


def toy_tokens(text: str) -> list[str]:
    """Whitespace tokens, or characters for text without spaces (e.g. 猫吃鱼)."""
    words = text.split()
    return words if len(words) > 1 else [c for c in text.strip() if not c.isspace()]


def toy_token_count(text: str, cap: int) -> int:
    """len(toy_tokens(text)) when it is at most `cap`, else a number over `cap`; found in C by one split that
    stops after `cap` words (a Python loop over match objects took 300 ms for 64 texts of 4096 words)."""
    words = text.split(None, cap)
    if len(words) != 1:
        return len(words)
    return len(words[0])  # one word: its characters are the tokens


def toy_embedding(token: str, seed: int, d_model: int) -> np.ndarray:
    """N(0, 1) numbers drawn from a generator seeded by (seed, token): the same token gets the same vector."""
    digest = hashlib.sha256(f"{seed}\x00{token}".encode()).digest()
    generator = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)
    return torch.randn(d_model, generator=generator, dtype=torch.float64).numpy()


def toy_extent(lengths: list[int], d_model: int) -> Extent:
    """The extent of texts of these token counts."""
    seq = max(lengths)
    return Extent(batch=len(lengths), seq=seq, seq_kv=seq, d_model=d_model)


def toy_inputs(tokens: list[list[str]], d_model: int, seed: int) -> Inputs:
    """The embeddings of the tokens, padded to the longest text, with its padding mask (None without
    padding)."""
    extent = toy_extent([len(text_tokens) for text_tokens in tokens], d_model)
    x = np.zeros((extent.batch, extent.seq, d_model))  # [batch, query_pos, d_model]
    mask = np.zeros((extent.batch, extent.seq), dtype=bool)  # [batch, key_pos]
    for row, text_tokens in enumerate(tokens):
        for pos, token in enumerate(text_tokens):
            x[row, pos] = toy_embedding(token, seed, d_model)
        mask[row, : len(text_tokens)] = True
    return Inputs(x, x, x, key_mask=None if mask.all() else mask, direct=False)


def padded_tokens(tokens: list[list[str]]) -> list[list[str]]:
    """Each text's tokens padded with TOY_PAD_TOKEN to the longest: one token per position of the tensors."""
    seq = max(len(text_tokens) for text_tokens in tokens)
    return [text_tokens + [TOY_PAD_TOKEN] * (seq - len(text_tokens)) for text_tokens in tokens]
