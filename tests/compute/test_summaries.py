"""The summaries through the whole pipeline (a compute process's answer, in this process): every input form
and every model family against the same reductions of an independent reference's weights (float64 math for
explicit weights, transformers' eager output_attentions for the models), written in
tests/compute/test_summaries_math.py; slices, the blocked and the whole computation, and what is refused."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from schemas.axes import SUMMARY_NAMES, TENSOR_AXES
from tests.compute.test_families import reference
from tests.compute.test_summaries_math import reference_summaries, reference_weights
from tests.support.families import FAMILY_TYPES, SENTENCES

PER_QUERY = ("entropy", "top_keys", "top_weights")


def check(found: dict[str, Any], expected: dict[str, np.ndarray], real: np.ndarray, atol: float) -> None:
    """Each summary of a response against its reference; per-query summaries at the real queries only (a
    padded query's row is whatever its model computes; no sum or mean counts it)."""
    for name in SUMMARY_NAMES:
        if name not in found:
            continue
        value, wanted = np.asarray(found[name]), expected[name]
        assert value.shape == wanted.shape, name
        if name in PER_QUERY:
            value, wanted = (
                value.transpose(0, 2, 1, *range(3, value.ndim))[real],
                wanted.transpose(0, 2, 1, *range(3, wanted.ndim))[real],
            )
        if name == "top_keys":
            np.testing.assert_array_equal(value, wanted, err_msg=name)
        else:
            np.testing.assert_allclose(value, wanted, atol=atol, err_msg=name)


def explicit_case(seed: int = 0, batch: int = 2, seq: int = 9, d_model: int = 8, heads: int = 2) -> Any:
    generator = np.random.default_rng(seed)
    x = generator.normal(size=(batch, seq, d_model))
    w = {name: generator.normal(size=(d_model, d_model)) for name in ("w_q", "w_k", "w_v", "w_o")}
    mask = np.ones((batch, seq))
    mask[1, 6:] = 0
    return x, w, mask


def explicit_reference(x, w, mask, heads, causal, top_k, pool):
    batch, seq, d_model = x.shape
    d_k = d_model // heads

    def split(m):
        return m.reshape(batch, seq, heads, d_k).transpose(0, 2, 1, 3)

    q, k = split(x @ w["w_q"]), split(x @ w["w_k"])
    real = mask.astype(bool)
    allowed = np.broadcast_to(real[:, None, None, :], (batch, 1, seq, seq))
    if causal:
        allowed = allowed & np.tril(np.ones((seq, seq), dtype=bool))
    weights = reference_weights(q, k, 1 / np.sqrt(d_k), allowed)
    return weights, reference_summaries(weights, real, real, None, top_k, pool), real


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("with_weights", [False, True])  # blocked, or reduced from the whole weights
def test_embeddings_summaries_equal_the_reductions_of_float64_weights(compute, causal, with_weights):
    x, w, mask = explicit_case()
    names = [name for name in SUMMARY_NAMES if name not in ("duplicate_token_score", "induction_score")]
    body = {
        "embeddings": x.tolist(),
        "weights": {name: m.tolist() for name, m in w.items()},
        "num_heads": 2,
        "causal": causal,
        "attention_mask": mask.tolist(),
        "include": names + (["weights"] if with_weights else []) + ["output"],
        "top_k": 4,
        "pool": 2,
        "dtype": "float64",
    }
    response = compute.post(body)
    assert response.status_code == 200, response.text
    found = response.json()
    _, expected, real = explicit_reference(x, w, mask, 2, causal, 4, 2)
    check(found, expected, real, 1e-10)
    meta = found["meta"]
    assert meta["axes"]["top_keys"] == list(TENSOR_AXES["top_keys"])
    assert meta["shapes"]["pooled_weights"] == [2, 2, 5, 5]
    assert (meta["top_k"], meta["pool"], meta["rank"], meta["query_blocks"]) == (4, 2, 4, 5)


def test_slices_cut_the_summaries_as_they_cut_tensors(compute):
    """heads slices every summary; queries the per-query ones only: received, pooled and the scores still
    cover every real query."""
    x, w, mask = explicit_case(1)
    body = {
        "embeddings": x.tolist(),
        "weights": {name: m.tolist() for name, m in w.items()},
        "num_heads": 2,
        "attention_mask": mask.tolist(),
        "include": ["entropy", "top_keys", "received", "pooled_weights", "sink_score"],
        "heads": [1],
        "queries": [0, 4, 8],
        "dtype": "float64",
    }
    found = compute.post(body).json()
    _, expected, _ = explicit_reference(x, w, mask, 2, False, 5, 1)
    np.testing.assert_allclose(found["entropy"], expected["entropy"][:, [1]][:, :, [0, 4, 8]], atol=1e-10)
    np.testing.assert_array_equal(found["top_keys"], expected["top_keys"][:, [1]][:, :, [0, 4, 8]])
    np.testing.assert_allclose(found["received"], expected["received"][:, [1]], atol=1e-10)
    np.testing.assert_allclose(found["pooled_weights"], expected["pooled_weights"][:, [1]], atol=1e-10)
    np.testing.assert_allclose(found["sink_score"], expected["sink_score"][:, [1]], atol=1e-10)
    assert found["meta"]["shapes"]["top_keys"] == [2, 1, 3, 5]


def test_query_key_value_summaries(compute):
    """Q, K, V given directly, grouped by nothing, top_k over seq_kv of cross-attention lengths."""
    generator = np.random.default_rng(2)
    q, k, v = (generator.normal(size=(1, n, 4)) for n in (5, 3, 3))
    body = {"query": q.tolist(), "key": k.tolist(), "value": v.tolist(), "dtype": "float64"}
    found = compute.post({**body, "include": ["top_keys", "top_weights", "received"], "top_k": 7}).json()
    weights = reference_weights(q[:, None], k[:, None], 0.5, np.ones((1, 1, 5, 3), dtype=bool))
    expected = reference_summaries(weights, np.ones((1, 5), bool), np.ones((1, 3), bool), None, 7, 1)
    assert np.asarray(found["top_keys"]).shape == (1, 1, 5, 3)  # rank = min(top_k, seq_kv)
    np.testing.assert_array_equal(found["top_keys"], expected["top_keys"])
    np.testing.assert_allclose(found["top_weights"], expected["top_weights"], atol=1e-10)
    np.testing.assert_allclose(found["received"], expected["received"], atol=1e-10)


def test_toy_text_has_token_scores(compute):
    text = "a b c d a b c d a b"
    body = {"text": [text, "a b a"], "model": "toy", "num_heads": 2, "dtype": "float64"}
    names = ["duplicate_token_score", "induction_score", "previous_token_score"]
    found = compute.post({**body, "include": names}).json()
    assert np.asarray(found["induction_score"]).shape == (2, 2)
    # the weights from the toy embeddings' q and k, in float64 here; the reductions are the reference's
    qk = compute.post({**body, "include": ["q", "k"]}).json()
    q, k = np.asarray(qk["q"]), np.asarray(qk["k"])
    real = np.array([[True] * 10, [True] * 3 + [False] * 7])
    allowed = np.broadcast_to(real[:, None, None, :], (2, 1, 10, 10))
    weights = reference_weights(q, k, 1 / np.sqrt(q.shape[-1]), allowed)
    ids = np.array([[0, 1, 2, 3, 0, 1, 2, 3, 0, 1], [0, 1, 0, -1, -1, -1, -1, -1, -1, -1]])
    expected = reference_summaries(weights, real, real, ids, 5, 1)
    for name in names:
        np.testing.assert_allclose(found[name], expected[name], atol=1e-10, err_msg=name)


@pytest.mark.parametrize("model_type", FAMILY_TYPES)
def test_every_family_summaries_equal_the_reductions_of_eager_weights(families, family_folders, model_type):
    """All summaries of every layer, blocked (no weights asked for), against the reductions of transformers'
    eager output_attentions for the same padded batch: causal and sliding-window masks, grouped-query
    heads, soft-caps, padding."""
    body = {"text": SENTENCES, "model": model_type, "include": list(SUMMARY_NAMES), "top_k": 3, "pool": 3}
    response = families.post(body)
    assert response.status_code == 200, response.text
    found = response.json()
    attentions, _, mask, tokens = reference(family_folders[model_type], model_type, SENTENCES)
    real = mask.numpy()
    vocabulary: dict[str, int] = {}
    seq = real.shape[1]
    ids = np.full((len(tokens), seq), -1)
    for row, text_tokens in enumerate(tokens):
        ids[row, : len(text_tokens)] = [vocabulary.setdefault(t, len(vocabulary)) for t in text_tokens]
    for entry in found["layers"]:
        weights = attentions[entry["layer"]].double().numpy()
        weights = np.where(real[:, None, :, None], weights, 0.0)  # padded rows: not compared
        expected = reference_summaries(weights, real, real, ids, 3, 3)
        check(entry, expected, real, 2e-5)


def test_a_model_recomputed_at_another_dtype_summarizes_in_blocks(families, family_folders):
    """float64 on a float32 model: the forward runs as the model does, each kept layer is recomputed in
    blocks at float64 with the model's own mask (here Mistral's sliding window)."""
    body = {"text": SENTENCES, "model": "mistral", "include": list(SUMMARY_NAMES), "dtype": "float64"}
    found = families.post(body).json()
    attentions, _, mask, tokens = reference(family_folders["mistral"], "mistral", SENTENCES)
    real = mask.numpy()
    for entry in found["layers"]:
        weights = np.where(real[:, None, :, None], attentions[entry["layer"]].double().numpy(), 0.0)
        expected = reference_summaries(weights, real, real, None, 5, 1)
        check({n: entry[n] for n in ("entropy", "received", "sink_score")}, expected, real, 2e-5)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"top_k": 0}, "top_k"),
        ({"top_k": 65}, "top_k"),
        ({"pool": 0}, "pool"),
        ({"include": ["induction_score"]}, "include"),
        ({"include": ["duplicate_token_score", "entropy"]}, "include"),
    ],
)
def test_bad_summary_settings_are_422_naming_the_field(compute, change, field):
    body = {"embeddings": [[1.0, 0.0], [0.0, 1.0]], "include": ["entropy"], **change}
    response = compute.post(body)
    assert response.status_code == 422, response.text
    assert any(field in item["loc"] for item in response.json()["detail"]), response.text


def test_summaries_reach_past_the_whole_matrix_bound(compute):
    """5,000 queries: a 413 on ATTENTION_MAX_SEQ (4096) with weights, answered in blocks without them."""
    generator = np.random.default_rng(4)
    q = generator.normal(size=(5000, 2)).round(3).tolist()
    body = {"query": q, "key": q, "value": q, "causal": True}
    refused = compute.post({**body, "include": ["weights", "entropy"]})
    assert refused.status_code == 413, refused.text
    assert refused.json()["limit"] == "ATTENTION_MAX_SEQ"
    answered = compute.post({**body, "include": ["entropy", "sink_score", "output"]})
    assert answered.status_code == 200, answered.text
    found = answered.json()
    assert np.asarray(found["entropy"]).shape == (1, 1, 5000)
    assert found["entropy"][0][0][0] == 0.0  # the first query sees only itself


@pytest.mark.parametrize("model_type", ["bert", "modernbert", "gpt2", "llama", "mistral", "gemma2"])
def test_layers_before_the_last_run_sdpa_and_the_last_still_matches_eager(
    families, family_folders, model_type
):
    """Only the last layer asked for: the ones before it run SDPA (in blocks of rows with the padded batch's
    mask, windows included; Gemma 2's soft-cap in the service's own blocks), keeping nothing, and what
    they hand on is exact: the last layer's summaries still equal the eager reference's."""
    last = 2
    names = ["entropy", "received", "previous_token_score", "sink_score"]
    found = families.post({"text": SENTENCES, "model": model_type, "layer": [last], "include": names})
    assert found.status_code == 200, found.text
    entry = found.json()["layers"][0]
    attentions, _, mask, _ = reference(family_folders[model_type], model_type, SENTENCES)
    real = mask.numpy()
    weights = np.where(real[:, None, :, None], attentions[last].double().numpy(), 0.0)
    check(entry, reference_summaries(weights, real, real, None, 5, 1), real, 2e-5)
