"""Step 1 for `text`: tokens and the vectors entering attention, from a pretrained model or the toy mode."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch

from schemas.request import TOY_D_MODEL, AttendRequest
from service.errors import LimitExceeded, RequestError
from service.inputs import Inputs
from service.limits import check_sequence_sizes
from service.models import LoadedModel
from service.settings import Settings


def toy_tokens(text: str) -> list[str]:
    """Whitespace tokens, or characters for text without spaces (e.g. 猫吃鱼)."""
    words = text.split()
    return words if len(words) > 1 else [c for c in text.strip() if not c.isspace()]


def toy_embedding(token: str, seed: int, d_model: int) -> np.ndarray:
    """N(0, 1) numbers drawn from a generator seeded by (seed, token): the same token gets the same vector."""
    digest = hashlib.sha256(f"{seed}\x00{token}".encode()).digest()
    generator = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)
    return torch.randn(d_model, generator=generator, dtype=torch.float64).numpy()


def _padded(tokens: list[list[str]], d_model: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    seq = max(len(t) for t in tokens)
    x = np.zeros((len(tokens), seq, d_model))  # [batch, seq, d_model]
    mask = np.zeros((len(tokens), seq), dtype=bool)  # [batch, seq]
    for row, text_tokens in enumerate(tokens):
        for pos, token in enumerate(text_tokens):
            x[row, pos] = toy_embedding(token, seed, d_model)
        mask[row, : len(text_tokens)] = True
    return x, mask


def toy_inputs(request: AttendRequest, settings: Settings) -> tuple[Inputs, list[list[str]]]:
    d_model = request.d_model or TOY_D_MODEL
    if d_model > settings.toy_max_d_model:
        raise LimitExceeded("ATTENTION_TOY_MAX_D_MODEL", settings.toy_max_d_model, d_model, "toy d_model")
    tokens = [toy_tokens(text) for text in request.texts]
    check_sequence_sizes(settings, len(tokens), max(len(t) for t in tokens))
    seed = request.weights.seed if request.weights is not None else 0
    x, mask = _padded(tokens, d_model, seed)
    key_mask = None if mask.all() else mask
    return Inputs(x=x, source=x, value=None, key_mask=key_mask, self_attention=True), tokens


@dataclass(frozen=True)
class Encoded:
    tokens: list[list[str]]  # per text, without padding
    input_ids: torch.Tensor  # [batch, seq]
    attention_mask: torch.Tensor  # [batch, seq], 1 = token, 0 = padding


def tokenize(request: AttendRequest, model: LoadedModel, settings: Settings) -> Encoded:
    """Tokens of each text; over the model's maximum positions is a 422 unless the request asks to truncate."""
    tokenizer = model.tokenizer
    lengths = [len(ids) for ids in tokenizer(request.texts, truncation=False)["input_ids"]]
    longest = max(lengths)
    if longest > model.max_length and not request.truncate:
        index = lengths.index(longest)
        raise RequestError(("text",), f"text[{index}] has {longest} tokens; the model {model.name!r} takes at most "
                                      f"{model.max_length}. Shorten it, or set truncate: true to cut it")
    check_sequence_sizes(settings, len(lengths), min(longest, model.max_length))
    encoded = tokenizer(request.texts, padding=True, truncation=True, max_length=model.max_length,
                        return_tensors="pt")
    mask = encoded["attention_mask"]
    tokens = [tokenizer.convert_ids_to_tokens(ids[: int(n)].tolist())
              for ids, n in zip(encoded["input_ids"], mask.sum(1))]
    return Encoded(tokens=tokens, input_ids=encoded["input_ids"], attention_mask=mask)
