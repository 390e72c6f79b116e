"""service/compute/limits.py and sizes.py in process: every limit from Sizes alone, its estimate, and the
edge."""

from __future__ import annotations

import pytest

from schemas.axes import TENSOR_NAMES, TensorName
from service.compute.limits import check_limits, check_sequence_sizes
from service.compute.sizes import Sizes
from service.errors import LimitExceeded
from service.settings import Settings

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
    layered = Sizes(**{**SIZES.__dict__, "layers": 3})
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
