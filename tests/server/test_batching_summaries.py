"""Dynamic batching of the summaries over real HTTP (service/compute/batching.py): text requests that ask for
summaries (docs/summaries.md), in blocks of queries (no n x n tensor asked) or from the whole weights, share
one forward pass, and each answer is the answer the request gets alone (a server with batching off) within
1e-6 in float64: its ranks cut to its own top_k and length, its pooled blocks to its own, no padding of the
batch in its sums. transformers' own eager MiniLM in float64, on each request's texts alone, agrees with the
batched answers (the formulas written here)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from schemas.axes import SUMMARY_NAMES
from tests.server.test_batching import (
    TEXTS,
    alone_server,  # noqa: F401  (a fixture)
    arrays,
    assert_same_answer,
    batching_server,  # noqa: F401  (a fixture)
    exact,
    passes,
    post,
)
from tests.support.models import minilm_folder

pytestmark = pytest.mark.slow

SUMMARIES = list(SUMMARY_NAMES)
TOP_K = 5  # more than the keys of the shortest request's texts (3 and 7 tokens), fewer than the others'


def eager(texts: list[str]) -> tuple[list[np.ndarray], np.ndarray]:
    """transformers' eager MiniLM in float64 on these texts alone: each layer's weights, and the real tokens
    (attention mask)."""
    folder = minilm_folder()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder, attn_implementation="eager", torch_dtype=torch.float64).eval()
    inputs = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**inputs, output_attentions=True)
    return [layer.numpy() for layer in out.attentions], inputs["attention_mask"].numpy().astype(bool)


@pytest.mark.parametrize(
    "more",
    [
        {"include": SUMMARIES},  # in blocks of queries
        {"include": ["weights", *SUMMARIES], "pool": 2},  # from the whole weights, pooled by 2
    ],
    ids=["blocked", "whole"],
)
def test_batched_summaries_are_each_requests_own(alone_server, batching_server, more):  # noqa: F811
    bodies: list[dict[str, Any] | bytes] = [exact(texts, top_k=TOP_K, **more) for texts in TEXTS]
    batched, sizes = passes(batching_server, bodies)
    assert [answer.status_code for answer in batched] == [200] * len(TEXTS)
    assert sizes == [1, len(TEXTS), 0]  # the four in one pass
    for body, answer in zip(bodies, batched, strict=True):
        alone = post(alone_server, body)
        assert alone.status_code == 200
        assert_same_answer(answer.json(), alone.json())
    for texts, answer in zip(TEXTS, batched, strict=True):
        layers = answer.json()["layers"]
        references, real = eager(texts)
        for layer, weights in zip(layers, references, strict=True):
            with np.errstate(divide="ignore", invalid="ignore"):
                entropy = -np.where(weights > 0, weights * np.log(weights), 0.0).sum(-1)
            received = (weights * real[:, None, :, None]).sum(2)  # over the real queries
            rank = min(TOP_K, weights.shape[-1])
            top = -np.sort(-weights, axis=-1, kind="stable")[..., :rank]
            np.testing.assert_allclose(arrays(layer["entropy"]), entropy, rtol=0, atol=1e-6)
            np.testing.assert_allclose(arrays(layer["received"]), received, rtol=0, atol=1e-6)
            np.testing.assert_allclose(arrays(layer["top_weights"]), top, rtol=0, atol=1e-6)
            first = np.take_along_axis(weights, arrays(layer["top_keys"]).astype(int), -1)
            np.testing.assert_allclose(first, top, rtol=0, atol=1e-6)  # the keys that hold those weights


def test_requests_whose_default_pools_differ_do_not_share_a_pass(alone_server, batching_server):  # noqa: F811
    # 128 and 256 tokens: about as long (twice), but the default pool (128 blocks at most) is 1 for one, 2
    # for the other: 128 blocks each, those of the shorter wrong if it were pooled by 2 in a pass of both
    bodies: list[dict[str, Any] | bytes] = [
        exact([" ".join(["cat"] * words)], layer=[0], include=["pooled_weights"]) for words in (126, 254)
    ]
    answers, sizes = passes(batching_server, bodies)
    assert [answer.status_code for answer in answers] == [200, 200]
    assert [answer.json()["meta"]["pool"] for answer in answers] == [1, 2]
    assert sizes == [2, 2, 2]  # each alone
    for body, answer in zip(bodies, answers, strict=True):
        assert_same_answer(answer.json(), post(alone_server, body).json())
