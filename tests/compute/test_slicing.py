"""`heads` and `queries` (service/compute/slicing.py): slices equal the slices of the full answer in every
format; meta echoes them; bad indexes are a 422 naming the index; the 413 estimate counts only the slice."""

from __future__ import annotations

import json

import numpy as np
import pytest

from service.protocol import ResponseFormat
from tests.support.formats import assert_same_arrays, json_arrays, read_safetensors

RNG = np.random.default_rng(11)
EXPLICIT = {
    "embeddings": RNG.normal(size=(2, 6, 8)).tolist(),
    "num_heads": 4,
    "causal": True,
    "weights": {"seed": 1},
}
TEXT = {"text": ["The cat ate the fish", "Hi"], "layer": [3, 0]}
AXES = {
    "q": "hq",
    "k": "h",
    "v": "h",
    "scores": "hq",
    "scaled_scores": "hq",
    "weights": "hq",
    "context": "hq",
}


def sliced(full: np.ndarray, name: str, heads: list[int], queries: list[int]) -> np.ndarray:
    """The expected slice, cut with numpy from the full answer: head is axis 1, query_pos 2 (output: 1)."""
    if name == "output":
        return full[:, queries]
    cut = full[:, heads]
    return cut[:, :, queries] if "q" in AXES[name] else cut


NOT_CAUSAL = {**EXPLICIT, "causal": False, "attention_mask": [[1, 1, 0, 1, 1, 1], [1, 1, 1, 1, 1, 0]]}


@pytest.mark.parametrize("body", [EXPLICIT, NOT_CAUSAL, TEXT], ids=["explicit causal", "explicit", "model"])
def test_slices_equal_the_slices_of_the_full_answer(compute, body):
    heads, queries = [1, 3], [0, 2, 5]
    if "text" in body:
        queries = [0, 2, 6]
    full = json_arrays(compute.post(body).json())
    response = compute.post({**body, "heads": heads, "queries": queries}).json()
    expected = {name: sliced(array, name.split(".")[-1], heads, queries) for name, array in full.items()}
    assert_same_arrays(json_arrays(response), expected)
    meta = response["meta"]
    assert (meta["heads"], meta["queries"]) == (heads, queries)
    for name, shape in meta["shapes"].items():
        assert shape == list(next(a for n, a in expected.items() if n.split(".")[-1] == name).shape)
    tensors, _ = read_safetensors(
        compute.post({**body, "heads": heads, "queries": queries}, ResponseFormat.SAFETENSORS).content
    )
    assert_same_arrays(tensors, expected)


def test_without_a_selection_meta_says_all(compute):
    meta = compute.post(EXPLICIT).json()["meta"]
    assert meta["heads"] is None and meta["queries"] is None


@pytest.mark.parametrize(
    ("selection", "loc", "words"),
    [
        ({"heads": [0, 4]}, ["body", "heads", 1], ["found 4", "0 to 3", "4 heads"]),
        ({"queries": [6]}, ["body", "queries", 0], ["found 6", "0 to 5"]),
        ({"heads": [2, 1]}, ["body", "heads"], ["heads[1] = 1", "smaller than heads[0] = 2", "sorted"]),
        ({"queries": [0, 3, 3]}, ["body", "queries"], ["queries[2] = 3", "a repeat of", "distinct"]),
        ({"heads": []}, ["body", "heads"], ["at least 1"]),
        ({"heads": [-1]}, ["body", "heads", 0], ["greater than or equal to 0"]),
    ],
)
def test_bad_indexes_are_a_422_naming_the_index(compute, selection, loc, words):
    reply = compute.post({**EXPLICIT, **selection})
    assert reply.status_code == 422, reply.text
    error = reply.json()["detail"][0]
    assert error["loc"] == loc, error
    for word in words:
        assert word in error["msg"], error["msg"]


def test_query_positions_of_a_text_are_checked_against_its_padded_length(compute):
    reply = compute.post({**TEXT, "queries": [7]})  # 7 tokens: [CLS] the cat ate the fish [SEP]
    assert reply.status_code == 422
    assert reply.json()["detail"][0]["loc"] == ["body", "queries", 0]


def test_the_413_estimate_counts_only_what_is_returned(limited_compute):
    # LIMITED_ENV allows 5000 numbers in a response: 8 heads x 32 x 32 weights are 8192, 1 head 1024
    body = {"embeddings": np.ones((32, 16)).tolist(), "num_heads": 8, "include": ["weights"]}
    refused = limited_compute.post(body)
    assert refused.status_code == 413 and refused.json()["estimate"] == 8192
    answered = limited_compute.post({**body, "heads": [5]})
    assert answered.status_code == 200, answered.text
    assert json.loads(answered.content)["meta"]["shapes"]["weights"] == [1, 1, 32, 32]
    halved = limited_compute.post({**body, "queries": list(range(16))})
    assert halved.status_code == 200, halved.text  # 8 heads x 16 queries x 32 keys: 4096
