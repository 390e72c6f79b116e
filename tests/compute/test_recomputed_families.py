"""A request that asks a model for another dtype, scale or causality than its own gets its layers' internals
from a second attention the service computes over the model's attention inputs, with its own copy of each
family's W_q, W_k, W_v, W_o and biases (service/compute/models/families.py). Here every family's
recomputation is held, tensor by tensor and layer by layer, against transformers' own eager model in float64
with the same change made to its attention (tests/support/recomputed.py), never against the service's other
answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support.families import DECODERS, FAMILY_TYPES, FLOAT64_EXACT, ROTARY, SENTENCES
from tests.support.recomputed import ReferenceModel, reference_model

TENSORS = ("q", "k", "v", "scores", "scaled_scores", "weights", "context", "output")
SCALE = 0.6  # far from every family's own: 1/sqrt(8) = 0.35, 1/sqrt(16) = 0.25, Gemma 2's 12^-1/2 = 0.29
TEXTS = SENTENCES[:2]  # a padded batch: the padding mask is the model's own, kept under every change

# The changes a request can make to a float32 model, each recomputed by the service. Decoders stay causal
# whatever a request says (`causal: true` on a decoder changes nothing), so causality is toggled on encoders.
CHANGES: dict[str, dict[str, Any]] = {
    "float64": {"dtype": "float64"},
    "float64-scale": {"dtype": "float64", "scale": SCALE},
    "float64-causal": {"dtype": "float64", "causal": True},
    "float32-scale": {"scale": SCALE},
}
CASES = [
    pytest.param(t, change, id=f"{t}-{change}")
    for t in FAMILY_TYPES
    for change in CHANGES
    if t not in DECODERS or "causal" not in change
]

# Each tensor's largest difference from the reference, over its largest magnitude, measured over every case
# here (transformers 5.24, torch 2.13, CPU), and the bound a small factor above it. A float32 model: the
# service recomputes from the attention inputs of its float32 forward pass, the reference from those of a
# float64 one, so the float32 rounding of the hidden states, carried through the layers, is the difference:
# at most 6.2e-6 in Gemma and Gemma 2 (they scale their embeddings by sqrt(d_model); scores reach 70), at
# most 8.0e-7 in the other families.
FLOAT32_MODEL = {"gemma": 2e-5, "gemma2": 2e-5}
FLOAT32_MODEL_OTHERS = 3e-6
# the float64 copies of the families whose eager attention is float64 throughout: the same inputs, the sum
# order of a few products aside: at most 1.6e-15
FLOAT64_MODEL = 1e-14


@pytest.fixture(scope="module")
def references(family_folders: dict[str, Path]) -> dict[str, ReferenceModel]:
    return {t: reference_model(family_folders[t], t, TEXTS) for t in FAMILY_TYPES}


def as_array(values: Any) -> np.ndarray:
    return np.asarray(values, dtype=np.float64)  # null (a masked scaled score) -> nan


def real_part(name: str, array: np.ndarray, text: int, length: int) -> np.ndarray:
    """The part of a tensor that the tokens of text `text` decide: its real positions (queries and keys),
    but every key of a weights row, whose padded keys must be 0."""
    row: np.ndarray = array[text]
    if name == "output":
        return row[:length]  # [query_pos, d_out]
    if name in ("scores", "scaled_scores"):
        return row[:, :length, :length]
    return row[:, :length]  # weights; q, k, v, context and the pre-rotary q, k: [head, pos, d]


def check_every_tensor(
    body: dict[str, Any], reference: ReferenceModel, scale: float | None, causal: bool, bound: float
) -> None:
    """Every returned tensor of every layer within `bound` times the reference tensor's largest magnitude of
    it, and null exactly where the reference masks."""
    assert body["meta"]["lengths"] == reference.lengths
    assert [entry["layer"] for entry in body["layers"]] == list(range(len(reference.layers)))
    for entry in body["layers"]:
        expected = reference.internals(entry["layer"], scale, causal)
        assert set(expected) <= set(entry)
        for name, wanted in expected.items():
            got = as_array(entry[name])
            for text, length in enumerate(reference.lengths):
                reference_part = real_part(name, wanted, text, length)
                np.testing.assert_allclose(
                    real_part(name, got, text, length),
                    reference_part,
                    atol=bound * np.nanmax(np.abs(reference_part)),
                    rtol=0,
                    err_msg=f"{name}, layer {entry['layer']}, text {text}",
                )


def include(model_type: str) -> list[str]:
    return [*TENSORS, *(("q_pre_rotary", "k_pre_rotary") if model_type in ROTARY else ())]


@pytest.mark.parametrize("model_type,change", CASES)
def test_recomputed_attention_matches_transformers_eager_in_float64(families, references, model_type, change):
    asked = CHANGES[change]
    response = families.post({"text": TEXTS, "model": model_type, "include": include(model_type), **asked})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["meta"]["dtype"] == asked.get("dtype", "float32")
    reference = references[model_type]
    if "scale" in asked:  # the change is large enough to matter
        assert abs(body["meta"]["scale"] - reference.layers[0].scale) > 0.2
    check_every_tensor(
        body,
        reference,
        asked.get("scale"),
        bool(asked.get("causal")),
        FLOAT32_MODEL.get(model_type, FLOAT32_MODEL_OTHERS),
    )


@pytest.mark.parametrize(
    "model_type,change",
    [
        pytest.param(t, change, id=f"{t}-{change}")
        for t in FLOAT64_EXACT
        for change in ("scale", "causal")
        if t not in DECODERS or change != "causal"
    ],
)
def test_a_float64_models_recomputation_matches_transformers_to_float64_rounding(
    families, references, model_type, change
):
    scale = SCALE if change == "scale" else None
    asked = {"dtype": "float64", "scale": scale, "causal": change == "causal"}  # scale null: the model's own
    response = families.post({"text": TEXTS, "model": f"{model_type}-f64", "include": list(TENSORS), **asked})
    assert response.status_code == 200, response.text
    check_every_tensor(response.json(), references[model_type], scale, change == "causal", FLOAT64_MODEL)
