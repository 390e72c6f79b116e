"""Texts to token ids with a pretrained model's own tokenizer."""

from __future__ import annotations

from dataclasses import dataclass

from jaxtyping import Int
from torch import Tensor

from schemas.request import AttendRequest
from service.compute.limits import check_sequence_sizes
from service.compute.models.registry import LoadedModel
from service.errors import RequestError
from service.settings import Settings


@dataclass(frozen=True)
class Encoded:
    tokens: list[list[str]]  # per text, without padding
    input_ids: Int[Tensor, "batch pos"]
    attention_mask: Int[Tensor, "batch pos"]  # 1 = token, 0 = padding


def tokenize(request: AttendRequest, model: LoadedModel, settings: Settings) -> Encoded:
    """Tokens of each text; over the model's maximum positions is a 422 unless the request asks to
    truncate."""
    tokenizer = model.tokenizer
    lengths = [len(ids) for ids in tokenizer(request.texts, truncation=False)["input_ids"]]
    longest = max(lengths)
    if longest > model.max_length and not request.truncate:
        index = lengths.index(longest)
        raise RequestError(
            ("text",),
            f"text[{index}] has {longest} tokens; the model {model.name!r} takes at most "
            f"{model.max_length}. Shorten it, or set truncate: true to cut it",
        )
    check_sequence_sizes(settings, len(lengths), min(longest, model.max_length))
    encoded = tokenizer(
        request.texts, padding=True, truncation=True, max_length=model.max_length, return_tensors="pt"
    )
    mask = encoded["attention_mask"]
    tokens = [
        tokenizer.convert_ids_to_tokens(ids[: int(n)].tolist())
        for ids, n in zip(encoded["input_ids"], mask.sum(1), strict=True)
    ]
    return Encoded(tokens=tokens, input_ids=encoded["input_ids"], attention_mask=mask)
