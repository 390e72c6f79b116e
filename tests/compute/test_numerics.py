"""Numerics at the edges of a dtype (issue 12, items 9 and 10): rounding never changes a value's magnitude
and never turns a finite value into null; null only ever means a masked entry."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import torch

from service.compute.encoding import encode

META = b"{}"


def decoded(sections: dict[str, Any], decimals: int | None = None) -> Any:
    return json.loads(encode(sections, decimals, lambda: META))


# item 10: decimals


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("decimals", [0, 3, 8, 15])
def test_rounding_never_changes_the_magnitude_of_large_values(dtype, decimals):
    finfo = torch.finfo(dtype)
    values = torch.tensor(
        [1e12, -2e12, 3.5e20, finfo.max, -finfo.max, finfo.max / 7, 2.0**60 + 2.0**10, 1e30], dtype=dtype
    )
    body = decoded({"scores": values}, decimals)["scores"]
    assert None not in body
    np.testing.assert_array_equal(np.asarray(body, dtype=values.numpy().dtype), values.numpy())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rounding_still_rounds_small_values_and_keeps_non_finite_ones_null(dtype):
    values = torch.tensor([0.123456, -2.987654, 1e-9, float("-inf"), float("nan"), 1e12], dtype=dtype)
    body = decoded({"scaled_scores": values}, 2)["scaled_scores"]
    assert body[:3] == [0.12, -2.99, 0.0] and body[3:5] == [None, None]
    assert body[5] == 1e12


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_decimals_on_large_scores_are_not_null(compute, dtype):
    """Scores of embeddings near 1e12 are near 1e24: rounding them to 15 places multiplied them past
    float32's range (and 1e150 past float64's)."""
    big = 1e12 if dtype == "float32" else 1e145
    body = {
        "embeddings": [[big, 2 * big], [3 * big, big]],
        "weights": {"init": "identity"},
        "dtype": dtype,
        "include": ["q", "scores"],
    }
    plain, rounded = compute.post(body), compute.post({**body, "decimals": 15})
    assert plain.status_code == rounded.status_code == 200, rounded.text
    scores = np.asarray(rounded.json()["scores"], dtype=dtype)
    assert np.isfinite(scores).all()
    np.testing.assert_array_equal(scores, np.asarray(plain.json()["scores"], dtype=dtype))
