"""Tokens line up with the tensors, as BertViz and every viewer that labels a heatmap's rows and columns
needs: in a padded batch every tokens[i] has one entry per position (the pad token at padded positions), and
meta.lengths gives each text's real length. BertViz's own check is reproduced: "Attention has N positions,
while number of tokens is M" is raised when len(tokens) differs from the attention's last axis."""

from __future__ import annotations

import numpy as np
import pytest

TEXTS = ["a b", "the cat sat"]


def bertviz_shape_check(attention: list[list[list[list[float]]]], tokens: list[str], item: int) -> None:
    """BertViz's head_view check on one batch item: the attention's positions equal the number of tokens."""
    positions = np.asarray(attention, dtype=float)[item].shape[-1]
    if positions != len(tokens):
        raise ValueError(f"Attention has {positions} positions, while number of tokens is {len(tokens)}")


@pytest.mark.parametrize(
    "request_body,pad",
    [({"text": TEXTS, "layer": "all"}, "[PAD]"), ({"text": TEXTS, "model": "toy", "num_heads": 2}, "[PAD]")],
    ids=["minilm", "toy"],
)
def test_batched_tokens_have_one_entry_per_position(compute, request_body, pad):
    body = compute.post({**request_body, "include": ["weights"]}).json()
    meta, tokens = body["meta"], body["tokens"]
    alone = [
        compute.post({**request_body, "text": t, "include": ["weights"]}).json()["tokens"][0] for t in TEXTS
    ]
    assert meta["lengths"] == [len(t) for t in alone] and meta["padded"] is True
    for item, text_tokens in enumerate(tokens):
        assert len(text_tokens) == meta["seq"] == meta["seq_kv"]
        length = meta["lengths"][item]
        assert text_tokens[:length] == alone[item] and text_tokens[length:] == [pad] * (meta["seq"] - length)
        for holder in body.get("layers") or [body]:
            bertviz_shape_check(holder["weights"], text_tokens, item)


def test_unpadded_texts_keep_their_tokens(compute):
    body = compute.post({"text": ["the cat", "a dog"], "model": "toy", "include": ["weights"]}).json()
    assert body["tokens"] == [["the", "cat"], ["a", "dog"]] and body["meta"]["padded"] is False


def test_num_heads_null_is_the_default_on_every_path(compute):
    """null is what the schema gives as num_heads' default, so it must do what leaving it out does."""
    for body, heads in (
        ({"text": "the cat sat"}, 12),
        ({"text": "the cat sat", "model": "toy"}, 1),
        ({"embeddings": [[1.0, 2.0], [3.0, 4.0]]}, 1),
        ({"query": [[1.0, 2.0]], "key": [[1.0, 2.0]], "value": [[1.0]]}, 1),
    ):
        for sent in (body, {**body, "num_heads": None}):
            answer = compute.post({**sent, "include": ["weights"]})
            assert answer.status_code == 200, answer.text
            assert answer.json()["meta"]["num_heads"] == heads
    assert compute.post({"text": "the cat sat", "num_heads": 12, "include": ["weights"]}).status_code == 200


def test_an_integral_number_is_an_integer(compute):
    """JSON Schema's integer includes 2.0, so a client may send it for an integer field."""
    body = {"embeddings": [[1.0, 2.0], [3.0, 4.0]], "include": ["weights"], "weights": {"seed": 3.0}}
    assert compute.post({**body, "num_heads": 2.0}).json()["meta"]["num_heads"] == 2
    assert compute.post({**body, "num_heads": 2.0}).json() | {"meta": None} == compute.post(
        {**body, "num_heads": 2, "weights": {"seed": 3}}
    ).json() | {"meta": None}
