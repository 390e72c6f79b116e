"""Text in, real pretrained attention out (in process): parity with Hugging Face transformers, padding,
tokens, toy mode, the model settings path, the tampered-weights refusal and bad input.
tests/server/test_startup.py has the same refusals stopping a real server's start-up."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from service.compute.models.registry import load_model
from service.errors import ModelError
from service.settings import BUNDLED_MODEL
from tests.support.models import minilm_folder, pickled_model, tampered_minilm
from tests.support.reference import check_parity

SENTENCE = "The cat ate the fish because it was hungry"
BATCH = [SENTENCE, "Hi there", "Attention is a soft table look-up over keys and values"]


def test_bundled_model_matches_transformers_on_every_layer(compute):
    response = compute.post({"text": SENTENCE, "layer": "all"})
    check_parity(response, minilm_folder(), [SENTENCE], list(range(6)))
    meta = response.json()["meta"]
    assert (meta["model"], meta["num_heads"], meta["d_k"], meta["d_model"]) == (BUNDLED_MODEL, 12, 32, 384)
    assert meta["weights_source"] == "model" and meta["padded"] is False


def test_bundled_model_padded_batch_matches_transformers(compute):
    response = compute.post({"text": BATCH, "layer": [5, 0, 3]})
    check_parity(response, minilm_folder(), BATCH, [5, 0, 3])
    assert response.json()["meta"]["padded"] is True
    meta, tokens = response.json()["meta"], response.json()["tokens"]
    assert meta["lengths"] == [len(t) - t.count("[PAD]") for t in tokens]


def test_float64_internals_match_transformers(compute):
    response = compute.post({"text": SENTENCE, "layer": "all", "dtype": "float64"})
    check_parity(response, minilm_folder(), [SENTENCE], list(range(6)))
    assert response.json()["meta"]["dtype"] == "float64"


@pytest.mark.parametrize("change", [{"scale": 0.1}, {"causal": True}, {"dtype": "float64"}])
def test_request_settings_change_only_the_layers_asked_for(compute, change):
    """A request's scale, causality or dtype applies to the attention it asks about; the hidden states
    entering each layer stay the model's own, so the (unscaled) scores of a later layer do not move."""
    asked = {"text": SENTENCE, "layer": [2, 5], "include": ["scores", "weights"]}
    plain, changed = compute.post(asked).json(), compute.post({**asked, **change}).json()
    for before, after in zip(plain["layers"], changed["layers"], strict=True):
        np.testing.assert_allclose(after["scores"], before["scores"], atol=1e-4)
        if "dtype" not in change:
            assert not np.allclose(after["weights"], before["weights"], atol=1e-3)


def test_models_whose_attention_differs_are_refused(tiny_bert_folder, tmp_path):
    folder = tmp_path / "relative"
    shutil.copytree(tiny_bert_folder, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "position_embedding_type": "relative_key"}))
    with pytest.raises(ModelError, match="position_embedding_type 'relative_key'.*supported"):
        load_model("relative", folder)


def test_tiny_random_bert_through_the_settings_path(tiny_compute, tiny_bert_folder):
    response = tiny_compute.post({"text": BATCH, "model": "tiny-bert"})
    check_parity(response, tiny_bert_folder, BATCH, [0, 1])
    tiny = next(m for m in tiny_compute.models.describe() if m["name"] == "tiny-bert")
    assert (tiny["layers"], tiny["heads"], tiny["d_model"], tiny["max_length"], tiny["loaded"]) == (
        2,
        4,
        32,
        40,
        True,
    )


def test_padding_does_not_change_real_tokens(compute):
    alone = compute.post({"text": "Hi there", "layer": "all", "include": ["weights", "output"]}).json()
    batch = compute.post({"text": BATCH, "layer": "all", "include": ["weights", "output"]}).json()
    n = len(alone["tokens"][0])
    assert batch["tokens"][1][:n] == alone["tokens"][0]
    for single, padded in zip(alone["layers"], batch["layers"], strict=True):
        np.testing.assert_allclose(
            np.asarray(padded["weights"])[1, :, :n, :n], np.asarray(single["weights"])[0], atol=1e-5
        )
        assert np.all(np.asarray(padded["weights"])[1, :, :, n:] == 0)  # padding keys get no weight
        np.testing.assert_allclose(
            np.asarray(padded["output"])[1, :n], np.asarray(single["output"])[0], atol=1e-5
        )


def test_toy_mode_is_deterministic_and_splits_characters(compute):
    request = {"text": "猫吃鱼", "model": "toy", "d_model": 4, "weights": {"seed": 3}, "dtype": "float64"}
    first, again = compute.post(request).json(), compute.post(request).json()
    assert first["tokens"] == [["猫", "吃", "鱼"]]
    assert first["q"] == again["q"] and first["weights"] == again["weights"]
    other = compute.post({**request, "weights": {"seed": 4}}).json()
    assert other["q"] != first["q"]
    words = compute.post({**request, "text": ["猫 吃 鱼", "猫 吃"]}).json()
    assert words["tokens"] == [["猫", "吃", "鱼"], ["猫", "吃", "[PAD]"]]
    # the same token has the same embedding in every position and text: identity weights expose it as Q
    identity = compute.post(
        {**request, "text": ["猫 吃 鱼", "鱼 猫"], "weights": {"init": "identity", "seed": 3}}
    ).json()
    q = np.asarray(identity["q"])[:, 0]  # [batch, pos, d_k]
    np.testing.assert_array_equal(q[0, 0], q[1, 1])
    np.testing.assert_array_equal(q[0, 2], q[1, 0])
    assert np.all(np.asarray(identity["weights"])[1, 0, :, 2] == 0)  # the padded third key of text 2


def test_too_long_text_is_refused_unless_truncation_is_asked(compute):
    long_text = " ".join(["cat"] * 600)
    refused = compute.post({"text": long_text, "layer": 0})
    assert refused.status_code == 422
    msg = refused.json()["detail"][0]["msg"]
    assert "602 tokens" in msg and "at most 512" in msg and "truncate" in msg
    cut = compute.post({"text": long_text, "layer": 0, "truncate": True, "include": ["weights"]})
    assert cut.status_code == 200
    assert len(cut.json()["tokens"][0]) == 512 and cut.json()["meta"]["truncated"] is True
    short = compute.post({"text": "cat", "layer": 0, "truncate": True, "include": ["weights"]})
    assert short.json()["meta"]["truncated"] is False  # asked, but nothing was cut


@pytest.mark.parametrize(
    "body,loc,fragments",
    [
        ({"text": "hi", "model": "gpt-9"}, ["model"], ["found 'gpt-9'", "all-MiniLM-L6-v2", "toy"]),
        ({"text": "hi", "layer": 6}, ["layer"], ["found layer 6", "layers 0 to 5"]),
        ({"text": "hi", "layer": [0, -1]}, ["layer"], ["found layer -1"]),
        ({"text": "hi", "layer": []}, ["layer"], ["empty list"]),
        ({"text": "hi", "layer": "first"}, ["layer"], ["found layer = 'first'", 'or "all"']),
        ({"text": ""}, ["text"], ["found an empty text at text;"]),
        ({"text": ["fine", "  "]}, ["text"], ["only whitespace ('  ') at text[1]"]),
        ({"text": []}, ["text"], ["empty list of texts"]),
        ({"text": ["fine", 3]}, ["text", 1], ["valid string", "found 3"]),
        ({"text": "hi", "embeddings": [[1.0]]}, [], ["text together with embeddings"]),
        ({"text": "hi", "weights": {"seed": 1}}, [], ["weights with a pretrained model"]),
        ({"text": "hi", "num_heads": 4}, ["num_heads"], ["found num_heads 4", "has num_heads 12"]),
        ({"text": "hi", "attention_mask": [[1]]}, [], ["padding mask of texts is made automatically"]),
        ({"text": "hi", "model": "toy", "layer": 0}, [], ["toy model, which has no layers"]),
        ({"embeddings": [[1.0]], "model": "toy"}, [], ["found model without text"]),
    ],
)
def test_bad_text_input_is_a_clear_422(compute, body, loc, fragments):
    response = compute.post(body)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"][0]
    assert detail["loc"] == ["body", *loc]
    for fragment in fragments:
        assert fragment in detail["msg"], (fragment, detail["msg"])


def test_too_many_texts_is_a_413(tiny_compute):
    response = tiny_compute.post({"text": ["a"] * 5, "model": "tiny-bert"})
    assert response.status_code == 413
    assert response.json()["limit"] == "ATTENTION_MAX_BATCH" and response.json()["estimate"] == 5


def test_tampered_weights_are_refused(tmp_path):
    tampered = tampered_minilm(tmp_path / "minilm")
    with pytest.raises(ModelError, match="SHA-256 .* refusing"):
        load_model(BUNDLED_MODEL, tampered)


def test_only_safetensors_are_served(tmp_path):
    folder = pickled_model(tmp_path / "pickled")
    with pytest.raises(ModelError, match="only safetensors weights are served"):
        load_model("pickled", folder)
