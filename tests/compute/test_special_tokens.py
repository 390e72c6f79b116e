"""Special tokens typed in a text are the text they are (issue 12, item 15): "[SEP]" written by a user is
tokenized as "[", "sep", "]", as transformers does with split_special_tokens=True; only the [CLS] and [SEP]
that the tokenizer adds around each text are special."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("typed", ["[SEP]", "[PAD]", "[MASK]", "[CLS]", "[UNK]"])
def test_special_tokens_typed_in_text_are_text(compute, typed):
    reply = compute.post({"text": f"a {typed} b", "layer": 0, "include": ["weights"]})
    assert reply.status_code == 200, reply.text
    tokens = reply.json()["tokens"][0]
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]"
    assert typed not in tokens[1:-1]
    assert tokens[1] == "a" and tokens[2] == "[" and tokens[-3] == "]" and tokens[-2] == "b"
    assert tokens.count("[SEP]") == 1 and tokens.count("[CLS]") == 1


def test_sep_typed_in_text_is_three_tokens(compute):
    tokens = compute.post({"text": "a [SEP] b", "layer": 0, "include": ["weights"]}).json()["tokens"][0]
    assert tokens == ["[CLS]", "a", "[", "sep", "]", "b", "[SEP]"]


def test_typed_special_tokens_are_text_in_a_batch_and_when_truncated(compute):
    texts = ["[PAD] [PAD]", "x " * 600 + "[SEP]"]
    reply = compute.post({"text": texts, "truncate": True, "layer": 0, "include": ["weights"]})
    assert reply.status_code == 200, reply.text
    first, second = reply.json()["tokens"]
    assert reply.json()["meta"]["lengths"] == [8, 512]
    # the typed "[PAD]" is text; the real padding (to the batch's length) is the pad token itself
    assert first == ["[CLS]", "[", "pad", "]", "[", "pad", "]", "[SEP]"] + ["[PAD]"] * (512 - 8)
    assert second.count("[SEP]") == 1 and second[-1] == "[SEP]"
