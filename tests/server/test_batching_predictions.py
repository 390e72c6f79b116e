"""Dynamic batching of `predict` and `interventions` over real HTTP (service/compute/batching.py): text
requests for a model with a language-model head that ask for predictions, with or without the same
interventions, share one forward pass (with interventions: one clean and one intervened), with or without
layers' internals, and each gets its own `predictions`, `predictions_clean` and `output_similarity` (its
texts' rows), equal to the answer it gets alone (a server with batching off) within 1e-6 in float64, its own
tokens and meta; transformers' own eager ...ForCausalLM in float64, on each request's texts alone, gives the
same top tokens and probabilities."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from devtools.servers import Server
from tests.server.test_batching import arrays, assert_same_answer, passes, post
from tests.support.families import SENTENCES
from tests.support.lm_families import lm_class, save_lm_model

pytestmark = pytest.mark.slow

MODEL = "tiny-llama-lm"
TOP_K = 5
# texts of different lengths, one and several per request: the batch pads each past its own length
TEXTS = [[SENTENCES[0]], [SENTENCES[1]], [SENTENCES[2], SENTENCES[1]], [SENTENCES[3], SENTENCES[0]]]


@pytest.fixture(scope="module")
def llama_folder(tmp_path_factory):
    return save_lm_model("llama", tmp_path_factory.mktemp("lm") / "llama")


@pytest.fixture(scope="module")
def servers(llama_folder):
    models = {"ATTENTION_MODELS": json.dumps({MODEL: {"path": str(llama_folder), "dtype": "float64"}})}
    alone = {**models, "ATTENTION_MAX_CONCURRENT": "1", "ATTENTION_BATCH_WINDOW_MS": "0"}
    batching = {**models, "ATTENTION_MAX_CONCURRENT": "1", "ATTENTION_BATCH_WINDOW_MS": "200"}
    with Server(alone) as alone_server, Server(batching) as batching_server:
        yield alone_server, batching_server


def eager_top(folder: Path, texts: list[str]) -> tuple[list[Any], np.ndarray]:
    """transformers' eager model in float64 on these texts (padded on the right, as the service pads): the
    top tokens and probabilities of the next token after each text's last token."""
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.padding_side = "right"
    model = lm_class("llama").from_pretrained(folder, torch_dtype=torch.float64, attn_implementation="eager")
    inputs = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits
    last = inputs["attention_mask"].sum(1) - 1
    top = torch.log_softmax(logits[torch.arange(len(texts)), last], -1).topk(TOP_K)
    tokens = [tokenizer.convert_ids_to_tokens(ids) for ids in top.indices.tolist()]
    return tokens, top.values.exp().numpy()


@pytest.mark.parametrize("include", [[], ["weights"]], ids=["predictions only", "with weights"])
def test_batched_predictions_are_each_requests_own(servers, llama_folder, include):
    alone_server, batching_server = servers
    bodies: list[dict[str, Any] | bytes] = [
        {"text": texts, "model": MODEL, "dtype": "float64", "include": include, "predict": {"top_k": TOP_K}}
        for texts in TEXTS
    ]
    batched, sizes = passes(batching_server, bodies)
    assert [answer.status_code for answer in batched] == [200] * len(TEXTS)
    assert sizes == [1, len(TEXTS), 0]  # the four in one pass
    for body, texts, answer in zip(bodies, TEXTS, batched, strict=True):
        ours = answer.json()
        alone = post(alone_server, body).json()
        assert_same_answer(ours, alone)
        assert ours["predictions"]["top_tokens"] == alone["predictions"]["top_tokens"]
        probs = arrays(ours["predictions"]["top_probs"])
        np.testing.assert_allclose(probs, arrays(alone["predictions"]["top_probs"]), rtol=0, atol=1e-6)
        tokens, reference = eager_top(llama_folder, texts)
        assert [[ranked for ranked in text[0]] for text in ours["predictions"]["top_tokens"]] == tokens
        np.testing.assert_allclose(probs[:, 0], reference, rtol=0, atol=1e-6)


def assert_same_sections(ours: dict[str, Any], alone: dict[str, Any]) -> None:
    """predictions, predictions_clean and output_similarity as alone: the same tokens, numbers within 1e-6."""
    sections = ("predictions", "predictions_clean", "output_similarity")
    assert [name for name in sections if name in ours] == [name for name in sections if name in alone]
    for name in ("predictions", "predictions_clean"):
        for key, value in alone.get(name, {}).items():
            if key == "top_tokens":
                assert ours[name][key] == value
            else:
                np.testing.assert_allclose(arrays(ours[name][key]), arrays(value), rtol=0, atol=1e-6)
    if "output_similarity" in alone:
        theirs = arrays(alone["output_similarity"])
        np.testing.assert_allclose(
            arrays(ours["output_similarity"]), theirs, rtol=0, atol=1e-6, equal_nan=True
        )


INTERVENTIONS = [
    {"ablate": {"layer": 1, "heads": [0, 2], "with": "mean"}},
    {"knockout": {"layer": 0, "queries": [1, 2], "keys": [0]}},
]


@pytest.mark.parametrize("include", [[], ["weights"]], ids=["predictions only", "with weights"])
def test_batched_interventions_are_each_requests_own(servers, include):
    alone_server, batching_server = servers
    bodies: list[dict[str, Any] | bytes] = [
        {
            "text": texts,
            "model": MODEL,
            "dtype": "float64",
            "include": include,
            "interventions": INTERVENTIONS,
            "predict": {"top_k": TOP_K, "targets": ["t"]},
        }
        for texts in TEXTS
    ]
    batched, sizes = passes(batching_server, bodies)
    assert [answer.status_code for answer in batched] == [200] * len(TEXTS), [a.text for a in batched]
    assert sizes == [1, len(TEXTS), 0]  # the four in one pass (its clean pass and its intervened pass)
    for body, answer in zip(bodies, batched, strict=True):
        ours, alone = answer.json(), post(alone_server, body).json()
        assert {"predictions", "predictions_clean", "output_similarity"} <= alone.keys()
        assert_same_answer(ours, alone)
        assert_same_sections(ours, alone)


def test_a_patch_is_computed_alone(servers):
    # a patch's source context is computed as its request is read, before its ticket is taken: a request
    # whose client left would have it computed, so a patch never waits in a pass
    alone_server, batching_server = servers
    patch = {"patch": {"layer": 1, "heads": [0], "text": SENTENCES[0]}}
    body = {"text": [SENTENCES[0]], "model": MODEL, "dtype": "float64", "interventions": [patch]}
    bodies: list[dict[str, Any] | bytes] = [{**body, "predict": {"top_k": TOP_K}}] * 2
    answers, sizes = passes(batching_server, bodies)
    assert [answer.status_code for answer in answers] == [200, 200]
    assert sizes == [0, 0, 0]  # in no pass: computed through its door, as a request that cannot share one
    for body_sent, answer in zip(bodies, answers, strict=True):
        assert_same_sections(answer.json(), post(alone_server, body_sent).json())
