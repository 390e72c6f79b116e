"""rollout, norms, norms_summed and value_zeroing against references written from the papers' formulas
(tests/support/flow.py), computed from transformers' own eager models, never from the service's other
outputs: MiniLM with a padded batch, and tiny random decoders (Llama with grouped-query heads, Mistral with
a sliding window, GPT-2), to 1e-5 in float32 and 1e-9 in float64."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from devtools.compute import InProcess
from tests.support.families import SENTENCES, save_family_model
from tests.support.flow import (
    DECODERS,
    FLOW,
    Eager,
    rollout_reference,
    value_vectors,
    value_zeroing_reference,
)
from tests.support.models import minilm_folder

TEXTS = [
    "The cat ate the fish because it was hungry",
    "Hi there",
    "A query attends to every key before it",
]


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("flow-families")
    made = {t: save_family_model(t, root / t) for t in (*DECODERS, *OTHER_FAMILIES)}
    return {"bert": minilm_folder(), **made}


@pytest.fixture(scope="module")
def service(folders: dict[str, Path]) -> InProcess:
    """Each model by its family's name, and float64 copies ("<name>-f64") of those whose eager reference is
    float64 throughout (BERT, GPT-2)."""
    models: dict[str, Any] = {t: str(folder) for t, folder in folders.items()}
    models |= {f"{t}-f64": {"path": str(folders[t]), "dtype": "float64"} for t in ("bert", "gpt2")}
    return InProcess.from_env({"ATTENTION_MODELS": json.dumps(models), "ATTENTION_LOAD_MODELS": "lazy"})


def post(service: InProcess, body: dict[str, Any]) -> Any:
    response = service.post(body)
    assert response.status_code == 200, response.text
    return response.json()


CASES = [("bert", 1e-5), ("llama", 1e-5), ("mistral", 1e-5), ("gpt2", 1e-5)]
# the other families the service loads (tiny random models): ModernBERT's local windows, Qwen2's and Gemma 2's
# windowed layers, Gemma 2's soft-cap, Gemma's single kv head
OTHER_FAMILIES = ("distilbert", "modernbert")


@pytest.mark.parametrize("family", ["distilbert", "modernbert", "qwen2", "gemma", "gemma2"])
def test_every_other_family_matches_the_papers_formulas(service, folders, family):
    body = post(service, {"text": SENTENCES[:3], "model": family, "include": ["weights", *FLOW]})
    check_against_references(body, Eager(folders[family], family, SENTENCES[:3], torch.float32), 1e-5)


@pytest.mark.parametrize(("family", "tolerance"), CASES)
def test_every_name_of_every_layer_matches_the_papers_formulas(service, folders, family, tolerance):
    texts = TEXTS if family == "bert" else SENTENCES[:3]
    body = post(service, {"text": texts, "model": family, "include": ["weights", *FLOW]})
    eager = Eager(folders[family], family, texts, torch.float32)
    check_against_references(body, eager, tolerance)


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_float64_models_match_to_1e_9(service, folders, family):
    texts = TEXTS if family == "bert" else SENTENCES[:3]
    body = post(service, {"text": texts, "model": f"{family}-f64", "dtype": "float64", "include": FLOW})
    check_against_references(body, Eager(folders[family], family, texts, torch.float64), 1e-9)


def check_against_references(body: dict[str, Any], eager: Eager, tolerance: float) -> None:
    real = eager.real
    assert [len(t) for t in body["tokens"]] == [real.shape[1]] * real.shape[0]
    assert body["meta"]["lengths"] == real.sum(axis=1).tolist()
    assert not real.all()  # a padded batch
    visible = eager.visible()
    rows = real[:, :, None].repeat(real.shape[1], axis=2)  # the real queries' rows
    for entry in body["layers"]:
        layer = entry["layer"]
        attentions, v, _ = eager.run(layer)
        rollout = np.asarray(entry["rollout"])
        np.testing.assert_allclose(
            rollout[rows], rollout_reference(attentions, real, layer)[rows], atol=tolerance, rtol=0
        )
        assert (rollout[~eager.reachable() & rows] == 0).all()
        f = value_vectors(eager, v, layer)  # [batch, head, key_pos, d_out]
        weights = attentions[layer].double().numpy()  # [batch, head, query_pos, key_pos]
        norms = weights * np.linalg.norm(f, axis=-1)[:, :, None, :]
        heads_rows = np.broadcast_to(rows[:, None], norms.shape)
        np.testing.assert_allclose(
            np.asarray(entry["norms"])[heads_rows], norms[heads_rows], atol=tolerance, rtol=0
        )
        summed = np.linalg.norm(np.einsum("bhqk,bhko->bqko", weights, f), axis=-1)
        np.testing.assert_allclose(
            np.asarray(entry["norms_summed"])[rows], summed[rows], atol=tolerance, rtol=0
        )
        zeroing = np.asarray(entry["value_zeroing"])
        np.testing.assert_allclose(zeroing, value_zeroing_reference(eager, layer), atol=tolerance, rtol=0)
        assert np.allclose(zeroing.sum(-1)[real], 1) and (zeroing[~visible] == 0).all()
        # far from uniform: agreement means something
        assert zeroing[visible].std() > 0.01 and norms.std() > 0.01
