"""`predict` on tiny random models saved with their language-model head (every family: causal LMs and
masked-LM encoders), against transformers' own ...ForCausalLM / ...ForMaskedLM logits (eager attention);
and the 422s: a model without a head, targets that are not one token, positions out of range."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from devtools.compute import InProcess
from tests.support.families import FAMILY_TYPES, SENTENCES
from tests.support.lm_families import DECODER_TYPES, MASK, error, lm_class, post


def reference_log_probs(folder: Path, model_type: str, texts: list[str]) -> tuple[Any, Any, Any]:
    """transformers' own head: log-softmax of the model's logits at every position, the input ids and the
    padding mask (texts padded on the right)."""
    from transformers import AutoTokenizer

    model = lm_class(model_type).from_pretrained(folder, attn_implementation="eager").eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.padding_side = "right"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    encoded = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**encoded).logits
    return torch.log_softmax(logits.double(), dim=-1), encoded["input_ids"], encoded["attention_mask"]


@pytest.mark.parametrize("model_type", FAMILY_TYPES)
def test_predictions_equal_the_models_own_head(lm_compute, lm_folders, model_type):
    texts = SENTENCES[:2]
    tokenizer_vocab = lm_compute.models.get(model_type).tokenizer
    targets = tokenizer_vocab.convert_ids_to_tokens([5, 17, 40])
    body = post(
        lm_compute,
        {
            "text": texts,
            "model": model_type,
            "layer": 0,
            "include": [],
            "predict": {"positions": [0, 1], "top_k": 4, "targets": targets},
        },
    )
    expected, _, _ = reference_log_probs(lm_folders[model_type], model_type, texts)
    at = expected[:, [0, 1]]  # [batch, position, vocab]
    top = at.topk(4, dim=-1)
    predictions = body["predictions"]
    np.testing.assert_allclose(predictions["top_probs"], top.values.exp().numpy(), atol=1e-5)
    tokenizer = lm_compute.models.get(model_type).tokenizer
    expected_tokens = [[tokenizer.convert_ids_to_tokens(r) for r in text] for text in top.indices.tolist()]
    assert predictions["top_tokens"] == expected_tokens
    np.testing.assert_allclose(predictions["target_logprobs"], at[..., [5, 17, 40]].numpy(), atol=1e-5)
    meta = body["meta"]
    assert meta["predicted_positions"] == [[0, 1], [0, 1]]
    assert meta["axes"]["predictions.top_probs"] == ["batch", "position", "rank"]
    assert meta["shapes"]["predictions.target_logprobs"] == [2, 2, 3]
    assert "predictions_clean" not in body and "output_similarity" not in body


@pytest.mark.parametrize("model_type", ["gpt2", "llama"])
def test_a_decoder_predicts_after_each_texts_last_token_by_default(lm_compute, lm_folders, model_type):
    texts = SENTENCES[:3]  # of different lengths: padded
    body = post(lm_compute, {"text": texts, "model": model_type, "include": [], "predict": {}})
    expected, _, mask = reference_log_probs(lm_folders[model_type], model_type, texts)
    last = mask.sum(1) - 1
    assert body["meta"]["predicted_positions"] == [[int(n)] for n in last]
    top = expected[torch.arange(3), last].topk(5, dim=-1)
    np.testing.assert_allclose(
        np.asarray(body["predictions"]["top_probs"])[:, 0], top.values.exp().numpy(), atol=1e-5
    )


def test_a_masked_lm_predicts_at_its_mask_tokens_by_default(lm_compute, lm_folders):
    texts = [f"The cat ate the {MASK} because it was {MASK}", f"Hi {MASK} there {MASK}"]
    body = post(lm_compute, {"text": texts, "model": "bert", "include": [], "predict": {"top_k": 3}})
    expected, ids, _ = reference_log_probs(lm_folders["bert"], "bert", texts)
    mask_id = lm_compute.models.get("bert").tokenizer.mask_token_id
    positions = [[i for i, t in enumerate(row.tolist()) if t == mask_id] for row in ids]
    assert all(len(p) == 2 for p in positions)
    assert body["meta"]["predicted_positions"] == positions
    at = torch.stack([expected[b, p] for b, p in enumerate(positions)])
    np.testing.assert_allclose(
        body["predictions"]["top_probs"], at.topk(3, dim=-1).values.exp().numpy(), atol=1e-5
    )


def test_predict_without_a_head_is_a_422(compute):
    item = error(compute, {"text": "Hi there", "predict": {}})
    assert item["loc"] == ["body", "predict"] and "no language-model head" in item["msg"]


def test_targets_that_are_not_one_token_are_a_422(lm_compute):
    item = error(
        lm_compute,
        {"text": "Hi there", "model": "gpt2", "predict": {"targets": ["Hi", "not-a-token-at-all"]}},
    )
    assert item["loc"] == ["body", "predict", "targets", 1]
    assert "not one token" in item["msg"] and "not-a-token-at-all" in item["msg"]


def test_positions_beyond_the_shortest_text_are_a_422(lm_compute):
    item = error(
        lm_compute, {"text": ["Hi there", SENTENCES[0]], "model": "gpt2", "predict": {"positions": [1, 40]}}
    )
    assert item["loc"] == ["body", "predict", "positions", 1] and "below" in item["msg"]


def test_a_masked_lm_text_without_mask_tokens_needs_positions(lm_compute):
    item = error(lm_compute, {"text": "Hi there", "model": "bert", "predict": {}})
    assert item["loc"] == ["body", "predict", "positions"] and MASK in item["msg"]


def test_models_say_which_head_they_have(lm_compute):
    described = {m["name"]: m for m in lm_compute.models.describe()}
    assert {t: described[t]["lm_head"] for t in FAMILY_TYPES} == {
        t: "causal" if t in DECODER_TYPES else "masked" for t in FAMILY_TYPES
    }


def test_the_predictions_count_toward_the_413_estimate(lm_folders):
    """Returned numbers per pass: batch x positions x (2 top_k + targets + 1); two passes with a clean one."""
    env = {
        "ATTENTION_MODELS": json.dumps({"gpt2": str(lm_folders["gpt2"])}),
        "ATTENTION_MAX_RESPONSE_ELEMENTS": "4000",
    }
    compute = InProcess.from_env(env)
    body = {
        "text": SENTENCES[0],  # 18 tokens
        "model": "gpt2",
        "include": [],
        "predict": {"positions": list(range(18)), "top_k": 64},
        "interventions": [{"ablate": {"layer": 0, "heads": [0]}}],
    }
    response = compute.post(body)
    assert response.status_code == 413, response.text
    assert response.json()["limit"] == "ATTENTION_MAX_RESPONSE_ELEMENTS"
    assert response.json()["estimate"] == 2 * 18 * (2 * 64 + 1)
    assert compute.post({**body, "clean": False}).status_code == 200  # one pass: half of it


def test_interventions_run_in_the_models_own_settings(lm_compute):
    item = error(
        lm_compute,
        {
            "text": "Hi there",
            "model": "gpt2",
            "dtype": "float64",
            "interventions": [{"ablate": {"layer": 0, "heads": [0]}}],
        },
    )
    assert item["loc"] == ["body", "interventions"]
    assert (
        "dtype torch.float64" in item["msg"] and "runs with" in item["msg"] and "torch.float32" in item["msg"]
    )
