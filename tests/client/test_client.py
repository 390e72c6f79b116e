"""The blocking client against the real service: the worked examples' numbers, MiniLM's layers and a
grouped-query Llama's against transformers, masked entries, the service's errors as exceptions, the API key
and /models."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
import torch

from attention_client import (
    FLOW_TENSOR_NAMES,
    TENSOR_NAMES,
    Client,
    InvalidRequest,
    LimitExceeded,
    ModelInfo,
    NotReturned,
    Unauthorized,
)
from devtools.servers import Server
from schemas.axes import TENSOR_AXES
from tests.client.conftest import BODY_LIMIT, GROUPED
from tests.client.examples import SENTENCE, cat_eats_fish_weights, golden
from tests.support.flow import Eager, rollout_reference, value_vectors, value_zeroing_reference
from tests.support.http import API_KEY
from tests.support.models import minilm_folder
from tests.support.reference import reference

MINILM = "all-MiniLM-L6-v2"


@pytest.mark.parametrize("layout", ["in_out", "out_in"])
@pytest.mark.parametrize(("dtype", "tolerance"), [("float32", 1e-6), ("float64", 1e-9)])
def test_cat_eats_fish_numbers_and_axes(client, layout, dtype, tolerance):
    example = golden("seed_cat_eats_fish")
    result = client.attend(
        embeddings=example["embeddings"], weights=cat_eats_fish_weights(layout), dtype=dtype
    )
    # no `include`: the default tensors (not a rotary model's pre-rotary ones), with the golden axes
    assert result.axes == {name: TENSOR_AXES[name] for name in TENSOR_NAMES}
    for name, expected in example["expected"].items():
        array = result[name]
        assert array.dtype == np.float64
        assert array.shape == tuple(result.meta["shapes"][name])
        # one text, one head: drop the batch (and head) axes
        np.testing.assert_allclose(
            array[0, 0] if array.ndim == 4 else array[0], expected, rtol=0, atol=tolerance
        )
    np.testing.assert_allclose(result.weights.sum(-1), 1, atol=tolerance)
    assert result.meta["scale"] == pytest.approx(example["scale"], abs=1e-15)
    assert result.tokens == [] and not result.layers
    assert result.request_id


@pytest.mark.parametrize(("scale", "expected"), [(None, "expected_scaled"), (1.0, "expected_unscaled")])
def test_age_lookup_with_q_k_v_given(client, scale, expected):
    example = golden("seed_age_lookup")
    result = client.attend(
        query=example["query"], key=example["key"], value=example["value"], scale=scale, dtype="float64"
    )
    want = example[expected]
    assert result.meta["scale"] == pytest.approx(want["scale"], abs=1e-15)
    np.testing.assert_allclose(result.scores[0, 0], want["scores"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(result.weights[0, 0], want["weights"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(result.output[0], want["output"], rtol=0, atol=1e-9)


def test_minilm_layers_by_index_match_transformers(client):
    result = client.attend(text=SENTENCE, include=["weights", "output"])
    attentions, outputs, _, tokens = reference(minilm_folder(), [SENTENCE])
    assert result.tokens == tokens
    seq = len(tokens[0])
    assert list(result.layers) == result.meta["layer"] == list(range(6))
    assert len(result) == 0  # a model's tensors are per layer
    for index, layer in result.layers.items():
        assert layer.axes == {"weights": TENSOR_AXES["weights"], "output": TENSOR_AXES["output"]}
        assert layer.weights.shape == (1, 12, seq, seq) and layer.output.shape == (1, seq, 384)
        np.testing.assert_allclose(
            layer.weights, attentions[index].numpy(), atol=1e-5, err_msg=f"layer {index}"
        )
        np.testing.assert_allclose(layer.output, outputs[index].numpy(), atol=1e-5, err_msg=f"layer {index}")

    chosen = client.attend(text=SENTENCE, model=MINILM, layer=[4, 1], include=["weights"])
    assert set(chosen.layers) == {1, 4} and list(chosen.layers) == chosen.meta["layer"]
    np.testing.assert_allclose(chosen.layers[4].weights, result.layers[4].weights, atol=1e-6)
    with pytest.raises(
        NotReturned, match=r"layer 0 was not returned \(returned: .*\); ask for it in `layer`"
    ):
        _ = chosen.layers[0]
    with pytest.raises(NotReturned, match=r"'output' was not returned in layer 1 \(returned: weights\)"):
        _ = chosen.layers[1].output
    with pytest.raises(KeyError, match=r"per layer: result.layers\[i\]\['weights'\]"):
        _ = chosen.weights


def test_a_grouped_query_decoder_has_kv_head_axes_and_matches_transformers(client, grouped_folder):
    from transformers import AutoModel, AutoTokenizer

    names = ["q", "k", "v", "weights", "q_pre_rotary", "k_pre_rotary"]
    result = client.attend(text=SENTENCE, model=GROUPED, include=names)
    assert result.meta["num_heads"] == 4 and result.meta["num_kv_heads"] == 2
    assert result.meta["kv_head_of"] == [0, 0, 1, 1] and result.meta["positions"] == "rotary"
    assert result.meta["causal"] is True
    model = AutoModel.from_pretrained(grouped_folder, attn_implementation="eager")
    tokenizer = AutoTokenizer.from_pretrained(grouped_folder)
    encoded = tokenizer(SENTENCE, return_tensors="pt")
    assert result.tokens == [tokenizer.convert_ids_to_tokens(encoded["input_ids"][0])]
    seq = len(result.tokens[0])
    with torch.no_grad():
        attentions = model(**encoded, output_attentions=True).attentions
    causal = np.tril(np.ones((seq, seq), dtype=bool))
    for index, layer in result.layers.items():
        assert layer.axes["k"] == layer.axes["k_pre_rotary"] == ("batch", "kv_head", "key_pos", "d_k")
        assert layer.axes["v"] == ("batch", "kv_head", "key_pos", "d_v")
        assert layer.k.shape == layer.k_pre_rotary.shape == (1, 2, seq, 8)
        assert layer.q.shape == layer.q_pre_rotary.shape == (1, 4, seq, 8)
        np.testing.assert_allclose(layer.weights[0], attentions[index][0].numpy(), atol=1e-5)
        # query heads 0, 1 read kv head 0 and heads 2, 3 kv head 1: softmax(q k^T / sqrt(d_k)) again
        k = layer.per_query_head("k")
        assert (
            k.shape == (1, 4, seq, 8)
            and (k[0, 1] == layer.k[0, 0]).all()
            and (k[0, 2] == layer.k[0, 1]).all()
        )
        assert layer.per_query_head("q") is layer.q
        scores = np.where(causal, layer.q[0] @ k[0].swapaxes(-1, -2) / np.sqrt(8), -np.inf)
        weights = np.exp(scores - scores.max(-1, keepdims=True))
        np.testing.assert_allclose(layer.weights[0], weights / weights.sum(-1, keepdims=True), atol=1e-5)


def test_flow_tensors_of_a_grouped_query_decoder_match_the_papers_formulas(client, grouped_folder):
    result = client.attend(text=SENTENCE, model=GROUPED, layer=1, include=list(FLOW_TENSOR_NAMES))
    eager = Eager(grouped_folder, "llama", [SENTENCE], torch.float32)
    attentions, v, _ = eager.run(1)
    layer = result.layers[1]
    assert set(layer) == set(FLOW_TENSOR_NAMES)
    assert layer.axes["norms"] == ("batch", "head", "query_pos", "key_pos")
    assert layer.axes["rollout"] == layer.axes["value_zeroing"] == ("batch", "query_pos", "key_pos")
    np.testing.assert_allclose(layer.rollout, rollout_reference(attentions, eager.real, 1), atol=1e-5)
    f = value_vectors(eager, v, 1)  # each query head with its kv head's value
    weights = attentions[1].double().numpy()
    np.testing.assert_allclose(layer.norms, weights * np.linalg.norm(f, axis=-1)[:, :, None], atol=1e-5)
    summed = np.linalg.norm(np.einsum("bhqk,bhko->bqko", weights, f), axis=-1)
    np.testing.assert_allclose(layer.norms_summed, summed, atol=1e-5)
    np.testing.assert_allclose(layer.value_zeroing, value_zeroing_reference(eager, 1), atol=1e-5)


def test_masked_entries_are_minus_infinity(client):
    rng = np.random.default_rng(7)
    x = rng.normal(size=(5, 8))
    w_q, w_k, w_v = rng.normal(size=(3, 8, 8))
    padding = np.array([[True, True, True, True, False]])  # a numpy bool mask: sent as 0/1
    result = client.attend(
        embeddings=x,
        weights={"w_q": w_q, "w_k": w_k, "w_v": w_v},
        num_heads=2,
        causal=True,
        attention_mask=padding,
        include=["scaled_scores", "weights"],
        dtype="float64",
    )
    # the reference in float64: 2 heads of d_k 4, causal and padding combined
    q = (x @ w_q).reshape(5, 2, 4).transpose(1, 0, 2)
    k = (x @ w_k).reshape(5, 2, 4).transpose(1, 0, 2)
    allowed = np.tril(np.ones((5, 5), dtype=bool)) & padding[0]
    scaled = np.where(allowed, q @ k.transpose(0, 2, 1) / 2.0, -np.inf)
    weights = np.exp(scaled - scaled.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)

    got = result.scaled_scores
    assert got.dtype == np.float64 and got.shape == (1, 2, 5, 5)
    assert (np.isneginf(got[0]) == ~allowed).all()
    np.testing.assert_allclose(got[0], scaled, rtol=0, atol=1e-9)
    np.testing.assert_allclose(result.weights[0], weights, rtol=0, atol=1e-9)
    assert (result.weights[0][:, ~allowed] == 0).all()


def test_a_422_is_raised_with_the_services_message(client, service: Server):
    ragged = [[1.0, 2.0], [3.0]]
    with pytest.raises(InvalidRequest) as caught:
        client.attend(embeddings=ragged)
    raw = httpx.post(service.url + "/attend", json={"embeddings": ragged}, headers={"x-api-key": API_KEY})
    assert raw.status_code == caught.value.status == 422
    assert caught.value.errors == raw.json()["detail"]
    problem = raw.json()["detail"][0]
    assert problem["loc"] == ["body", "embeddings"] and "ragged" in problem["msg"]
    assert str(caught.value) == f"422 Unprocessable Entity: body.embeddings: {problem['msg']}"
    assert caught.value.request_id


def test_a_413_carries_the_limit_and_the_estimate(client):
    with pytest.raises(LimitExceeded) as caught:
        client.attend(embeddings=np.full((700, 8), 0.25))
    error = caught.value
    assert error.status == 413
    assert (error.limit, error.maximum) == ("ATTENTION_MAX_REQUEST_BYTES", BODY_LIMIT)
    assert error.estimate is not None and error.estimate > BODY_LIMIT
    assert "ATTENTION_MAX_REQUEST_BYTES" in str(error)


def test_what_json_cannot_carry_is_refused_before_sending(client):
    with pytest.raises(TypeError, match="cannot send a object as JSON"):
        client.attend(embeddings=object())
    with pytest.raises(TypeError, match="cannot send an array of <U1 as JSON"):
        client.attend(embeddings=np.array([["a"]]))


def test_the_api_key(service: Server, monkeypatch):
    example = golden("seed_cat_eats_fish")
    request = {"embeddings": example["embeddings"], "weights": cat_eats_fish_weights()}
    monkeypatch.delenv("ATTENTION_API_KEY", raising=False)
    with Client(service.url) as anonymous:
        assert anonymous.health() == {"status": "ok"} and anonymous.ready()  # probes stay open
        with pytest.raises(Unauthorized) as caught:
            anonymous.attend(**request)
        assert caught.value.status == 401
        assert caught.value.message == "missing API key: send it in the X-API-Key header"
        with pytest.raises(Unauthorized):
            anonymous.models()
    with (
        Client(service.url, api_key="not-the-key") as wrong,
        pytest.raises(Unauthorized, match="no valid key"),
    ):
        wrong.attend(**request)
    monkeypatch.setenv("ATTENTION_API_KEY", API_KEY)  # the name client/README.md documents
    with Client(service.url) as from_environment:
        assert from_environment.attend(**request).weights.shape == (1, 1, 3, 3)


def test_models(client):
    listed = client.models()
    assert listed["default"] == MINILM
    by_name = {entry["name"]: entry for entry in listed["models"]}
    assert (by_name[MINILM]["layers"], by_name[MINILM]["heads"], by_name[MINILM]["d_model"]) == (6, 12, 384)
    assert by_name["toy"]["toy"] is True
    typed = ModelInfo.__required_keys__ | ModelInfo.__optional_keys__
    for entry in listed["models"]:
        assert set(entry) == typed, f"untyped: {set(entry) - typed}; not sent: {typed - set(entry)}"
    assert {k: by_name[GROUPED][k] for k in ("family", "kind", "positions", "heads", "kv_heads")} == {
        "family": "llama",
        "kind": "decoder",
        "positions": "rotary",
        "heads": 4,
        "kv_heads": 2,
    }
