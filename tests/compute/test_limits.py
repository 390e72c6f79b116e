"""service/compute/limits.py and sizes.py in process: every limit from Sizes alone, its estimate, and the
edge."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from devtools.compute import InProcess
from schemas.axes import TENSOR_NAMES, TensorName
from service.compute.limits import check_limits, check_sequence_sizes
from service.compute.sizes import Sizes
from service.errors import LimitExceeded
from service.settings import Settings
from tests.support.families import SENTENCES

SIZES = Sizes(batch=2, seq=3, seq_kv=5, d_model=8, num_heads=2, d_k=4, d_v=3, d_out=8)


def settings(**limits: int) -> Settings:
    """The default limits but these (no ATTENTION_* variable read)."""
    return Settings.model_validate(limits)


def test_sizes_give_every_shape_and_count():
    assert SIZES.shape("q") == (2, 2, 3, 4) and SIZES.shape("k") == (2, 2, 5, 4)
    assert SIZES.shape("v") == (2, 2, 5, 3) and SIZES.shape("weights") == (2, 2, 3, 5)
    assert SIZES.shape("context") == (2, 2, 3, 3) and SIZES.shape("output") == (2, 3, 8)
    assert SIZES.elements("scores") == 60
    assert SIZES.input_width == 8
    assert SIZES.weight_elements == 8 * 2 * (2 * 4 + 3) + 2 * 3 * 8
    direct = Sizes(batch=1, seq=2, seq_kv=2, d_model=None, num_heads=3, d_k=2, d_v=1, d_out=3)
    assert direct.input_width == 6


def test_within_every_limit_passes():
    check_limits(settings(), SIZES, TENSOR_NAMES)


@pytest.mark.parametrize(
    "limit,field,estimate",
    [
        ("ATTENTION_MAX_BATCH", "max_batch", 2),
        ("ATTENTION_MAX_SEQ", "max_seq", 5),  # the longer of seq and seq_kv
        ("ATTENTION_MAX_HEADS", "max_heads", 2),
        ("ATTENTION_MAX_DIM", "max_dim", 8),  # the widest of d_model, heads*d_k, heads*d_v, d_out
    ],
)
def test_each_size_limit_holds_at_its_value_and_refuses_one_below(limit, field, estimate):
    check_limits(settings(**{field: estimate}), SIZES, TENSOR_NAMES)
    with pytest.raises(LimitExceeded) as refused:
        check_limits(settings(**{field: estimate - 1}), SIZES, TENSOR_NAMES)
    error = refused.value
    assert (error.limit, error.maximum, error.estimate) == (limit, estimate - 1, estimate)
    assert limit in str(error) and f"{estimate - 1:,}" in str(error)


def test_response_elements_count_only_the_returned_tensors_of_every_layer():
    returned: tuple[TensorName, ...] = ("weights", "output")
    per_layer = SIZES.elements("weights") + SIZES.elements("output")
    layered = dataclasses.replace(SIZES, layers=3)
    check_limits(settings(max_response_elements=3 * per_layer), layered, returned)
    with pytest.raises(LimitExceeded) as refused:
        check_limits(settings(max_response_elements=3 * per_layer - 1), layered, returned)
    assert refused.value.limit == "ATTENTION_MAX_RESPONSE_ELEMENTS"
    assert refused.value.estimate == 3 * per_layer
    assert "weights, output" in str(refused.value)


def test_compute_elements_count_inputs_weights_and_every_internal_returned_or_not():
    inputs = 2 * (3 + 5) * 8
    held = inputs + SIZES.weight_elements + sum(SIZES.elements(name) for name in TENSOR_NAMES)
    check_limits(settings(max_compute_elements=held), SIZES, ["output"])
    with pytest.raises(LimitExceeded) as refused:
        check_limits(settings(max_compute_elements=held - 1), SIZES, ["output"])
    assert refused.value.limit == "ATTENTION_MAX_COMPUTE_ELEMENTS" and refused.value.estimate == held


def test_sequence_sizes_alone():
    check_sequence_sizes(settings(max_batch=4, max_seq=10), 4, 10)
    with pytest.raises(LimitExceeded, match="ATTENTION_MAX_BATCH"):
        check_sequence_sizes(settings(max_batch=4), 5, 1)
    with pytest.raises(LimitExceeded, match="ATTENTION_MAX_SEQ"):
        check_sequence_sizes(settings(max_seq=10), 1, 11)


def test_compute_elements_count_the_internals_and_weights_of_every_layer():
    """Each layer holds its own weights and internals; the inputs are held once."""
    inputs = 2 * (3 + 5) * 8
    per_layer = SIZES.weight_elements + sum(SIZES.elements(name) for name in TENSOR_NAMES)
    layered = dataclasses.replace(SIZES, layers=3)
    check_limits(settings(max_compute_elements=inputs + per_layer), SIZES, ["output"])
    with pytest.raises(LimitExceeded) as refused:
        check_limits(settings(max_compute_elements=inputs + per_layer), layered, ["output"])
    assert refused.value.limit == "ATTENTION_MAX_COMPUTE_ELEMENTS"
    assert refused.value.estimate == inputs + 3 * per_layer


# a model's layers, through the pipeline: the tiny random BERT of tests/support/families.py (3 layers,
# d_model 32, 4 heads of 8), its estimate written out here from its config
BERT_LAYERS, D_MODEL, HEADS, D_HEAD = 3, 32, 4, 8


def bert_compute_elements(seq: int, layers: int) -> int:
    """Inputs (queries and keys) once; per layer W_q, W_k, W_v, W_o and q, k, v, scores, scaled scores,
    weights, context, output, for one text of `seq` tokens."""
    inputs = 2 * seq * D_MODEL
    weights = 4 * D_MODEL * HEADS * D_HEAD
    internals = 4 * HEADS * seq * D_HEAD + 3 * HEADS * seq * seq + seq * D_MODEL
    return inputs + layers * (weights + internals)


def bert_limited(folder: Path, limit: str, maximum: int) -> InProcess:
    return InProcess.from_env({"ATTENTION_MODELS": json.dumps({"bert": str(folder)}), limit: str(maximum)})


def tokens_of(folder: Path, text: str) -> int:
    from transformers import AutoTokenizer

    return len(AutoTokenizer.from_pretrained(folder)(text)["input_ids"])


@pytest.mark.parametrize("layer,counted", [(0, 1), ([0, 2], 2), ("all", BERT_LAYERS), (None, BERT_LAYERS)])
def test_a_compute_limit_one_layer_passes_refuses_more_layers(family_folders, layer, counted):
    folder = family_folders["bert"]
    one_layer = bert_compute_elements(tokens_of(folder, SENTENCES[0]), 1)
    limited = bert_limited(folder, "ATTENTION_MAX_COMPUTE_ELEMENTS", one_layer)
    body: dict[str, Any] = {"text": SENTENCES[0], "model": "bert", "include": ["weights"]}
    reply = limited.post(body if layer is None else {**body, "layer": layer})  # no layer: all of them
    if counted == 1:
        assert reply.status_code == 200, reply.text
        return
    assert reply.status_code == 413, reply.text
    refused = reply.json()
    assert refused["limit"] == "ATTENTION_MAX_COMPUTE_ELEMENTS" and refused["maximum"] == one_layer
    assert refused["estimate"] == bert_compute_elements(tokens_of(folder, SENTENCES[0]), counted)


@pytest.mark.parametrize("layer,counted", [(1, 1), ([1, 2], 2), ("all", BERT_LAYERS)])
def test_a_response_limit_one_layer_passes_refuses_more_layers(family_folders, layer, counted):
    folder = family_folders["bert"]
    seq = tokens_of(folder, SENTENCES[0])
    one_layer = HEADS * seq * seq  # the weights of one layer
    limited = bert_limited(folder, "ATTENTION_MAX_RESPONSE_ELEMENTS", one_layer)
    reply = limited.post({"text": SENTENCES[0], "model": "bert", "include": ["weights"], "layer": layer})
    if counted == 1:
        assert reply.status_code == 200, reply.text
        return
    assert reply.status_code == 413, reply.text
    refused = reply.json()
    assert (
        refused["limit"] == "ATTENTION_MAX_RESPONSE_ELEMENTS" and refused["estimate"] == counted * one_layer
    )
