"""Texts are tokenized once when none is over the model's maximum length (models/tokenizer.py): the
ids counted are padded by the service rather than tokenized a second time (issue 26: the tokenizer's
Python call is a large share of a batched request's own cost). The encoding must be the tokenizer's own, as
transformers pads it: compared with the tokenizer's padding=True call, for an encoder's and decoders'
tokenizers (with the pad token each gets: GPT-2 has none of its own)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from schemas.request import AttendRequest
from service.compute.models.tokenizer import tokenize

TEXTS = ["The cat ate the fish", "a [SEP] b [PAD]", "x", "the dog barked at the mail carrier because"]


def reference(tokenizer: Any, texts: list[str]) -> Any:
    """The tokenizer's own padded encoding (a BatchEncoding of tensors)."""
    return tokenizer(texts, padding=True, truncation=False, split_special_tokens=True, return_tensors="pt")


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama"])
def test_the_encoding_is_the_tokenizers_own_padded_call(families, family):
    model = families.models.get(family)
    encoded = tokenize(AttendRequest(text=TEXTS, model=family), model, families.settings)
    expected = reference(model.tokenizer, TEXTS)
    assert torch.equal(encoded.input_ids, expected["input_ids"])
    assert torch.equal(encoded.attention_mask, expected["attention_mask"])
    assert encoded.input_ids.dtype == expected["input_ids"].dtype == torch.int64
    assert encoded.lengths == [int(n) for n in expected["attention_mask"].sum(1)]
    assert encoded.tokens == [model.tokenizer.convert_ids_to_tokens(row) for row in expected["input_ids"]]
    assert not encoded.truncated


def test_texts_within_the_maximum_are_tokenized_once(compute, monkeypatch):
    model = compute.models.get(compute.settings.default_model)
    calls = []
    tokenizer_call = type(model.tokenizer).__call__

    def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return tokenizer_call(self, *args, **kwargs)

    monkeypatch.setattr(type(model.tokenizer), "__call__", counted)
    encoded = tokenize(AttendRequest(text=TEXTS), model, compute.settings)
    assert len(calls) == 1
    assert torch.equal(encoded.input_ids, reference(model.tokenizer, TEXTS)["input_ids"])
    calls.clear()
    long = "word " * (model.max_length + 10)  # cut by the tokenizer: a second call, with truncation
    cut = tokenize(AttendRequest(text=[long, "x"], truncate=True), model, compute.settings)
    assert len(calls) == 2 and cut.truncated and cut.lengths == [model.max_length, 3]
