"""service/compute/encoding.py in process: tensors to JSON straight from memory, null for non-finite
values."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import torch

from service.compute.encoding import host_arrays
from tests.support.formats import encoded as encode

META = b'{"seed":0}'


def decoded(sections: dict[str, Any], decimals: int | None = None) -> Any:
    return json.loads(encode(sections, decimals, lambda: META))


def test_tensors_are_written_with_their_values_and_meta_last():
    t = torch.tensor([[0.5, -1.25], [3.0, 4.0]], dtype=torch.float64)
    body = encode({"weights": t, "tokens": [["a", "b"]]}, None, lambda: META)
    assert body.endswith(b',"meta":{"seed":0}}')
    assert json.loads(body) == {
        "weights": [[0.5, -1.25], [3.0, 4.0]],
        "tokens": [["a", "b"]],
        "meta": {"seed": 0},
    }


def test_nothing_but_meta():
    assert encode({}, None, lambda: META) == b'{"meta":{"seed":0}}'


def test_non_finite_values_are_null():
    t = torch.tensor([float("-inf"), float("nan"), float("inf"), 1.0])
    assert decoded({"scaled_scores": t})["scaled_scores"] == [None, None, None, 1.0]


def test_decimals_round_every_tensor_also_inside_layers():
    t = torch.tensor([0.123456, 2.987654], dtype=torch.float64)
    body = decoded({"q": t, "layers": [{"layer": 0, "weights": t}]}, decimals=2)
    assert body["q"] == [0.12, 2.99] and body["layers"] == [{"layer": 0, "weights": [0.12, 2.99]}]


def test_meta_is_asked_for_once_after_the_tensors():
    calls: list[int] = []

    def meta() -> bytes:
        calls.append(1)
        return META

    encode({"q": torch.zeros(2)}, None, meta)
    assert calls == [1]


def test_cpu_float32_and_float64_tensors_are_viewed_not_copied():
    tensors = {"a": torch.arange(6, dtype=torch.float32).view(2, 3), "b": torch.ones(2, dtype=torch.float64)}
    arrays = host_arrays(tensors)
    assert arrays["a"].dtype == np.float32 and arrays["b"].dtype == np.float64
    assert np.shares_memory(arrays["a"], tensors["a"].numpy())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_widened_to_float32_exactly(dtype):
    tensors = {"a": torch.tensor([[0.1, 0.2]], dtype=dtype), "b": torch.tensor([3.5, -1.0], dtype=dtype)}
    arrays = host_arrays(tensors)
    for name, tensor in tensors.items():
        assert arrays[name].dtype == np.float32 and arrays[name].shape == tuple(tensor.shape)
        np.testing.assert_array_equal(arrays[name], tensor.float().numpy())
    written = np.asarray(decoded({"a": tensors["a"]})["a"], dtype=np.float32)  # float32's shortest repr
    np.testing.assert_array_equal(written, tensors["a"].float().numpy())
