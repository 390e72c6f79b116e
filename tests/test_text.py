"""Text in, real pretrained attention out: parity with Hugging Face transformers, padding, tokens, toy mode,
the model settings path, the tampered-weights refusal and bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from service.compute.models.registry import DEFAULT_MODEL, bundled_folder, load_model
from service.errors import ModelError
from tests.conftest import ROOT, TOKENIZER_FILES, _free_port

SENTENCE = "The cat ate the fish because it was hungry"
BATCH = [SENTENCE, "Hi there", "Attention is a soft table look-up over keys and values"]


def reference(folder, texts):
    """Hugging Face's own answer: eager attention weights per layer and each attention block's W_o output."""
    model = AutoModel.from_pretrained(folder, attn_implementation="eager", local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    encoded = tokenizer(texts, padding=True, return_tensors="pt")
    outputs = []
    hooks = [
        layer.attention.output.dense.register_forward_hook(lambda m, i, o: outputs.append(o.detach()))
        for layer in model.encoder.layer
    ]
    with torch.no_grad():
        result = model(**encoded, output_attentions=True)
    for hook in hooks:
        hook.remove()
    tokens = [
        tokenizer.convert_ids_to_tokens(ids[: int(n)])
        for ids, n in zip(encoded["input_ids"], encoded["attention_mask"].sum(1))
    ]
    return result.attentions, outputs, encoded["attention_mask"].bool(), tokens


def check_parity(response, folder, texts, layers):
    assert response.status_code == 200, response.text
    body = response.json()
    attentions, outputs, mask, tokens = reference(folder, texts)
    assert body["tokens"] == tokens
    assert [entry["layer"] for entry in body["layers"]] == layers
    real = mask.numpy()  # [batch, seq]
    for entry in body["layers"]:
        index = entry["layer"]
        weights = np.asarray(entry["weights"])
        np.testing.assert_allclose(
            weights, attentions[index].numpy(), atol=1e-5, err_msg=f"weights, layer {index}"
        )
        np.testing.assert_allclose(
            np.asarray(entry["output"])[real],
            outputs[index].numpy()[real],
            atol=1e-5,
            err_msg=f"output, layer {index}",
        )


def test_bundled_model_matches_transformers_on_every_layer(server):
    response = server.post({"text": SENTENCE, "layer": "all"})
    check_parity(response, bundled_folder(), [SENTENCE], list(range(6)))
    meta = response.json()["meta"]
    assert (meta["model"], meta["num_heads"], meta["d_k"], meta["d_model"]) == (DEFAULT_MODEL, 12, 32, 384)
    assert meta["weights_source"] == "model" and meta["padded"] is False


def test_bundled_model_padded_batch_matches_transformers(server):
    response = server.post({"text": BATCH, "layer": [5, 0, 3]})
    check_parity(response, bundled_folder(), BATCH, [5, 0, 3])
    assert response.json()["meta"]["padded"] is True
    assert response.json()["meta"]["lengths"] == [len(t) for t in response.json()["tokens"]]


def test_float64_internals_match_transformers(server):
    response = server.post({"text": SENTENCE, "layer": "all", "dtype": "float64"})
    check_parity(response, bundled_folder(), [SENTENCE], list(range(6)))
    assert response.json()["meta"]["dtype"] == "float64"


@pytest.mark.parametrize("change", [{"scale": 0.1}, {"causal": True}, {"dtype": "float64"}])
def test_request_settings_change_only_the_layers_asked_for(server, change):
    """A request's scale, causality or dtype applies to the attention it asks about; the hidden states entering
    each layer stay the model's own, so the (unscaled) scores of a later layer do not move."""
    asked = {"text": SENTENCE, "layer": [2, 5], "include": ["scores", "weights"]}
    plain, changed = server.post(asked).json(), server.post({**asked, **change}).json()
    for before, after in zip(plain["layers"], changed["layers"]):
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


def test_tiny_random_bert_through_the_settings_path(tiny_server, tiny_bert_folder):
    models = tiny_server.client.get("/models").json()
    tiny = next(m for m in models["models"] if m["name"] == "tiny-bert")
    assert (tiny["layers"], tiny["heads"], tiny["d_model"], tiny["max_length"], tiny["loaded"]) == (
        2,
        4,
        32,
        40,
        True,
    )
    response = tiny_server.post({"text": BATCH, "model": "tiny-bert"})
    check_parity(response, tiny_bert_folder, BATCH, [0, 1])


def test_padding_does_not_change_real_tokens(server):
    alone = server.post({"text": "Hi there", "layer": "all", "include": ["weights", "output"]}).json()
    batch = server.post({"text": BATCH, "layer": "all", "include": ["weights", "output"]}).json()
    n = len(alone["tokens"][0])
    assert batch["tokens"][1] == alone["tokens"][0]
    for single, padded in zip(alone["layers"], batch["layers"]):
        np.testing.assert_allclose(
            np.asarray(padded["weights"])[1, :, :n, :n], np.asarray(single["weights"])[0], atol=1e-5
        )
        assert np.all(np.asarray(padded["weights"])[1, :, :, n:] == 0)  # padding keys get no weight
        np.testing.assert_allclose(
            np.asarray(padded["output"])[1, :n], np.asarray(single["output"])[0], atol=1e-5
        )


def test_models_endpoint_lists_models_and_toy(server):
    listing = server.client.get("/models").json()
    assert listing["default"] == DEFAULT_MODEL
    by_name = {m["name"]: m for m in listing["models"]}
    minilm = by_name[DEFAULT_MODEL]
    assert (
        minilm["layers"],
        minilm["heads"],
        minilm["d_model"],
        minilm["vocab_size"],
        minilm["max_length"],
    ) == (6, 12, 384, 30522, 512)
    assert minilm["loaded"] is True and by_name["toy"]["toy"] is True


def test_toy_mode_is_deterministic_and_splits_characters(server):
    request = {"text": "猫吃鱼", "model": "toy", "d_model": 4, "weights": {"seed": 3}, "dtype": "float64"}
    first, again = server.post(request).json(), server.post(request).json()
    assert first["tokens"] == [["猫", "吃", "鱼"]]
    assert first["q"] == again["q"] and first["weights"] == again["weights"]
    other = server.post({**request, "weights": {"seed": 4}}).json()
    assert other["q"] != first["q"]
    words = server.post({**request, "text": ["猫 吃 鱼", "猫 吃"]}).json()
    assert words["tokens"] == [["猫", "吃", "鱼"], ["猫", "吃"]]
    # the same token has the same embedding in every position and text: identity weights expose it as Q
    identity = server.post(
        {**request, "text": ["猫 吃 鱼", "鱼 猫"], "weights": {"init": "identity", "seed": 3}}
    ).json()
    q = np.asarray(identity["q"])[:, 0]  # [batch, pos, d_k]
    np.testing.assert_array_equal(q[0, 0], q[1, 1])
    np.testing.assert_array_equal(q[0, 2], q[1, 0])
    assert np.all(np.asarray(identity["weights"])[1, 0, :, 2] == 0)  # the padded third key of text 2


def test_too_long_text_is_refused_unless_truncation_is_asked(server):
    long_text = " ".join(["cat"] * 600)
    refused = server.post({"text": long_text, "layer": 0})
    assert refused.status_code == 422
    msg = refused.json()["detail"][0]["msg"]
    assert "602 tokens" in msg and "at most 512" in msg and "truncate" in msg
    cut = server.post({"text": long_text, "layer": 0, "truncate": True, "include": ["weights"]})
    assert cut.status_code == 200
    assert len(cut.json()["tokens"][0]) == 512 and cut.json()["meta"]["truncated"] is True


@pytest.mark.parametrize(
    "body,loc,fragments",
    [
        ({"text": "hi", "model": "gpt-9"}, ["model"], ["found 'gpt-9'", "all-MiniLM-L6-v2", "toy"]),
        ({"text": "hi", "layer": 6}, ["layer"], ["found layer 6", "layers 0 to 5"]),
        ({"text": "hi", "layer": [0, -1]}, ["layer"], ["found layer -1"]),
        ({"text": "hi", "layer": []}, ["layer"], ["empty list"]),
        ({"text": "hi", "layer": "first"}, ["layer"], ["found 'first'"]),
        ({"text": ""}, ["text"], ["empty text at text[0]"]),
        ({"text": ["fine", "  "]}, ["text"], ["empty text at text[1]"]),
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
def test_bad_text_input_is_a_clear_422(server, body, loc, fragments):
    response = server.post(body)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"][0]
    assert detail["loc"] == ["body", *loc]
    for fragment in fragments:
        assert fragment in detail["msg"], (fragment, detail["msg"])


def test_too_many_texts_is_a_413(tiny_server):
    response = tiny_server.post({"text": ["a"] * 5, "model": "tiny-bert"})
    assert response.status_code == 413
    assert response.json()["limit"] == "ATTENTION_MAX_BATCH" and response.json()["estimate"] == 5


def failed_start_up(models: dict[str, str]) -> str:
    """Starts uvicorn with these models, expects it to refuse to start, and returns what it logged."""
    env = {**os.environ, "ATTENTION_MODELS": json.dumps(models)}
    process = subprocess.run(
        [sys.executable, "-m", "uvicorn", "service.server.app:app", "--port", str(_free_port())],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert process.returncode != 0
    return process.stderr


def test_tampered_weights_are_refused_at_start_up(tmp_path):
    tampered = tmp_path / "minilm"
    shutil.copytree(bundled_folder(), tampered)
    weights = tampered / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # one bit pattern in the last tensor's bytes
    weights.write_bytes(bytes(data))
    stderr = failed_start_up({DEFAULT_MODEL: str(tampered)})
    assert "SHA-256" in stderr and "refusing" in stderr


def test_only_safetensors_are_served(tmp_path):
    folder = tmp_path / "pickled"
    folder.mkdir()
    shutil.copy(bundled_folder() / "config.json", folder / "config.json")
    for name in TOKENIZER_FILES:
        shutil.copy(bundled_folder() / name, folder / name)
    (folder / "pytorch_model.bin").write_bytes(b"not loaded, ever")
    assert "only safetensors weights are served" in failed_start_up({"pickled": str(folder)})
