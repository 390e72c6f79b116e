"""The flow names as requests use them (MiniLM, in process): a rollout asked for one layer alone, `heads`
and `queries` slicing, the 413 estimate of what they hold (a rollout's earlier layers, value zeroing's
runs), a stream holding one layer at a time, and the 422 for inputs without a model's layers."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from devtools.compute import InProcess
from tests.support.flow import FLOW, Eager, rollout_reference
from tests.support.models import minilm_folder

TEXTS = ["The cat ate the fish because it was hungry", "Hi there"]


def post(compute: InProcess, body: dict[str, Any]) -> Any:
    response = compute.post(body)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize("layer", [0, 3, 5])
def test_a_rollout_asked_alone_computes_the_layers_before_it(compute, layer):
    body = post(compute, {"text": TEXTS, "layer": layer, "include": ["rollout"]})
    assert [entry["layer"] for entry in body["layers"]] == [layer] and body["meta"]["layer"] == [layer]
    assert set(body["layers"][0]) == {"layer", "rollout"}
    eager = Eager(minilm_folder(), "bert", TEXTS, torch.float32)
    attentions, _, _ = eager.run(layer)
    rows = np.broadcast_to(eager.real[:, :, None], eager.visible().shape)
    expected = rollout_reference(attentions, eager.real, layer)
    np.testing.assert_allclose(np.asarray(body["layers"][0]["rollout"])[rows], expected[rows], atol=1e-5)


def test_heads_and_queries_cut_the_axes_each_tensor_has(compute):
    whole = post(compute, {"text": TEXTS, "layer": [4, 2], "include": FLOW})
    cut = post(compute, {"text": TEXTS, "layer": [4, 2], "include": FLOW, "heads": [1, 7], "queries": [0, 3]})
    meta = cut["meta"]
    assert meta["heads"] == [1, 7] and meta["queries"] == [0, 3]
    assert meta["axes"] == {
        "rollout": ["batch", "query_pos", "key_pos"],
        "norms": ["batch", "head", "query_pos", "key_pos"],
        "norms_summed": ["batch", "query_pos", "key_pos"],
        "value_zeroing": ["batch", "query_pos", "key_pos"],
    }
    seq = meta["seq"]
    assert meta["shapes"] == {
        "rollout": [2, 2, seq],
        "norms": [2, 2, 2, seq],
        "norms_summed": [2, 2, seq],
        "value_zeroing": [2, 2, seq],
    }
    for full, sliced in zip(whole["layers"], cut["layers"], strict=True):
        assert full["layer"] == sliced["layer"]
        norms = np.asarray(full["norms"])[:, [1, 7]][:, :, [0, 3]]
        np.testing.assert_array_equal(np.asarray(sliced["norms"]), norms)
        for name in ("rollout", "norms_summed", "value_zeroing"):
            np.testing.assert_array_equal(np.asarray(sliced[name]), np.asarray(full[name])[:, [0, 3]])
            assert np.shape(sliced[name]) == tuple(meta["shapes"][name])


def limited(maximum: int) -> InProcess:
    return InProcess.from_env({"ATTENTION_MAX_COMPUTE_ELEMENTS": str(maximum)})


def estimate(body: dict[str, Any]) -> int:
    """The numbers `body` holds, from the 413 of a service that allows one."""
    response = limited(1).post(body)
    assert response.status_code == 413, response.text
    answer = response.json()
    assert answer["limit"] == "ATTENTION_MAX_COMPUTE_ELEMENTS"
    return int(answer["estimate"])


def test_value_zeroing_counts_its_runs_in_the_413_estimate():
    weights = {"text": TEXTS, "layer": 3, "include": ["weights"]}
    zeroing = {**weights, "include": ["weights", "value_zeroing"]}
    # one run of the layer for one text: at least its scores, scaled scores and weights (12 heads, n x n)
    seq = 12
    assert estimate(zeroing) - estimate(weights) > 3 * 12 * seq * seq
    service = limited(estimate(weights))
    assert service.post(weights).status_code == 200
    refused = service.post(zeroing)
    assert refused.status_code == 413
    assert "value zeroing" in refused.json()["detail"] and refused.json()["estimate"] == estimate(zeroing)


def test_value_zeroings_runs_are_bounded_by_their_own_limit():
    """Its time grows as layers x keys x one run of the layer: ATTENTION_MAX_VALUE_ZEROING_ELEMENTS."""
    service = InProcess.from_env({"ATTENTION_MAX_VALUE_ZEROING_ELEMENTS": "1"})
    one = service.post({"text": TEXTS, "layer": 0, "include": ["value_zeroing"]})
    three = service.post({"text": TEXTS, "layer": [0, 2, 4], "include": ["value_zeroing"]})
    assert one.status_code == three.status_code == 413
    assert one.json()["limit"] == "ATTENTION_MAX_VALUE_ZEROING_ELEMENTS" and one.json()["maximum"] == 1
    assert three.json()["estimate"] == 3 * one.json()["estimate"]
    # a run of one layer for one text holds at least its 12 heads' n x n scores, scaled scores and weights:
    # one per key (12 of them) and text (2)
    assert one.json()["estimate"] > 2 * 12 * (3 * 12 * 12 * 12)
    assert service.post({"text": TEXTS, "layer": 0, "include": FLOW[:3]}).status_code == 200
    allowed = InProcess.from_env({"ATTENTION_MAX_VALUE_ZEROING_ELEMENTS": str(one.json()["estimate"])})
    assert allowed.post({"text": TEXTS, "layer": 0, "include": ["value_zeroing"]}).status_code == 200


def test_a_rollout_holds_the_layers_before_it_unless_streamed():
    alone = {"text": TEXTS, "layer": 5, "include": ["weights"]}
    rollout = {**alone, "include": ["weights", "rollout"]}
    # layers 0..5 held together: five more layers' internals and weights than layer 5 alone
    assert estimate(rollout) > 5 * estimate({"text": TEXTS, "layer": 0, "include": ["weights"]}) // 2
    service = limited((estimate(rollout) + estimate(alone)) // 2)
    assert service.post(rollout).status_code == 413
    frames = list(service.stream(rollout))  # a stream holds one layer at a time
    assert [status for status, _, _ in frames] == [200] * len(frames)
    assert b'"rollout"' in b"".join(content for _, content, _ in frames)


def test_a_request_in_another_dtype_gets_value_zeroing_as_the_model_runs(compute):
    as_model = post(compute, {"text": TEXTS, "layer": 1, "include": FLOW})
    wider = post(compute, {"text": TEXTS, "layer": 1, "include": FLOW, "dtype": "float64"})
    for name in FLOW:
        np.testing.assert_allclose(
            np.asarray(wider["layers"][0][name]), np.asarray(as_model["layers"][0][name]), atol=1e-5
        )


@pytest.mark.parametrize(
    "body",
    [
        {"embeddings": [[1.0, 0.0], [0.0, 1.0]]},
        {"query": [[1.0, 0.0]], "key": [[1.0, 0.0]], "value": [[1.0, 0.0]]},
        {"text": "a b c", "model": "toy"},
    ],
    ids=["embeddings", "qkv", "toy"],
)
@pytest.mark.parametrize("name", FLOW)
def test_without_a_model_the_flow_names_are_a_422(compute, body, name):
    response = compute.post({**body, "include": ["weights", name]})
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", "include"]
    assert f"found {name}" in error["msg"] and "need a model's layers" in error["msg"]
