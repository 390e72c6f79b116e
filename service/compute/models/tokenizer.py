"""Texts to token ids with a pretrained model's own tokenizer.

Heavy work waits for the cheap checks: the batch is checked before any text is read, and each text is read
only up to a bound of characters (CHARS_PER_TOKEN per token of the model's maximum length) before it is
tokenized, so a text of millions of words costs what a text of the model's maximum length costs.

Special tokens typed in a text ("[SEP]", "[PAD]", "[MASK]") are tokenized as the text they are
(split_special_tokens): only the tokenizer's own [CLS] and [SEP] around each text are special.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Int
from torch import Tensor

from schemas.request import AttendRequest
from service.compute.limits import check_batch, check_sequence_sizes
from service.compute.models.registry import LoadedModel
from service.errors import RequestError
from service.settings import Settings

# Characters read per token of the model's maximum length: generous (English text has 4 to 5 per token for a
# BERT tokenizer); a longer text is cut there before tokenizing, at its last whitespace. A candidate setting
# (ATTENTION_MAX_TEXT_CHARS), a constant for now.
CHARS_PER_TOKEN = 32
_CUT_AT = (" ", "\n", "\t", "\r")  # whitespace for a BERT tokenizer: a token boundary whatever follows


@dataclass(frozen=True)
class Encoded:
    tokens: list[list[str]]  # per text, padded with the tokenizer's pad token: one per tensor position
    input_ids: Int[Tensor, "batch pos"]
    attention_mask: Int[Tensor, "batch pos"]  # 1 = token, 0 = padding
    lengths: list[int]  # per text, its tokens without the padding (after truncation)
    truncated: bool  # whether a text was cut to the model's maximum length


def readable_prefix(text: str, chars: int) -> str:
    """The text itself when it has at most `chars` characters; else its beginning up to its last whitespace
    within them (up to `chars` when there is none), whose tokens are the first tokens of the whole text."""
    if len(text) <= chars:
        return text
    cut = max(text.rfind(space, 0, chars + 1) for space in _CUT_AT)
    return text[: cut if cut > 0 else chars]


def tokenize(
    request: AttendRequest, model: LoadedModel, settings: Settings, mask_token: bool = False
) -> Encoded:
    """Tokens of each text; over the model's maximum positions is a 422 unless the request asks to
    truncate. `mask_token` (predictions of a masked LM): special tokens typed in a text are the tokenizer's
    own, so that its mask token ("[MASK]", "<mask>") marks the positions to predict."""
    split = not mask_token
    texts = request.texts
    check_batch(settings, len(texts))
    tokenizer = model.tokenizer
    chars = model.max_length * CHARS_PER_TOKEN
    read = [readable_prefix(text, chars) for text in texts]
    counted = tokenizer(read, truncation=False, split_special_tokens=split, verbose=False)["input_ids"]
    lengths = [len(ids) for ids in counted]
    for index, (text, prefix, length) in enumerate(zip(texts, read, lengths, strict=True)):
        whole = len(prefix) == len(text)
        if length > model.max_length and not request.truncate:
            raise RequestError(
                ("text",),
                f"text[{index}] has {'' if whole else 'at least '}{length} tokens; the model "
                f"{model.name!r} takes at most {model.max_length}. Shorten it, or set truncate: true to cut "
                "it",
            )
        if length <= model.max_length and not whole:
            raise RequestError(
                ("text",),
                f"text[{index}] has {len(text):,} characters, and its first {len(prefix):,} give only "
                f"{length} tokens; the service reads at most {chars:,} characters of a text for the model "
                f"{model.name!r} ({CHARS_PER_TOKEN} per token of its {model.max_length}). Shorten it",
            )
    truncated = max(lengths) > model.max_length
    if truncated:  # the tokenizer cuts them
        encoded = tokenizer(
            read,
            padding=True,
            truncation=True,
            max_length=model.max_length,
            split_special_tokens=split,
            return_tensors="pt",
        )
        rows = [ids.tolist() for ids in encoded["input_ids"]]
        input_ids, mask = encoded["input_ids"], encoded["attention_mask"]
    else:  # the ids counted are the ids: padded here, without tokenizing again (issue 26)
        rows, masks = _padded(counted, tokenizer.pad_token_id, tokenizer.padding_side)
        input_ids, mask = torch.tensor(rows), torch.tensor(masks)
    check_sequence_sizes(settings, len(texts), input_ids.shape[1], request.blocked)
    return Encoded(
        tokens=[tokenizer.convert_ids_to_tokens(ids) for ids in rows],
        input_ids=input_ids,
        attention_mask=mask,
        lengths=[int(n) for n in mask.sum(1)],
        truncated=truncated,
    )


def _padded(ids: list[list[int]], pad: int, side: str) -> tuple[list[list[int]], list[list[int]]]:
    """Each text's ids padded with `pad` to the longest, on `side`, as the tokenizer's padding=True pads
    them, and the attention mask (1: a token, 0: padding)."""
    width = max(len(row) for row in ids)
    rows, masks = [], []
    for row in ids:
        gap = width - len(row)
        if side == "left":
            rows.append([pad] * gap + row)
            masks.append([0] * gap + [1] * len(row))
        else:
            rows.append(row + [pad] * gap)
            masks.append([1] * len(row) + [0] * gap)
    return rows, masks
