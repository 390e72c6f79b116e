"""Numerics at the edges of a dtype (issue 12, items 9 and 10): rounding never changes a value's magnitude
and never turns a finite value into null; null only ever means a masked entry."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import torch

from tests.support.formats import encoded as encode

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


# item 9: values outside a dtype's range, and computations that overflow


def detail(reply: Any) -> tuple[list[Any], str]:
    assert reply.status_code == 422, (reply.status_code, reply.text[:300])
    first = reply.json()["detail"][0]
    return first["loc"], first["msg"]


W = [[1.0, 0.0], [0.0, 1.0]]


@pytest.mark.parametrize(
    "body,loc,fragments",
    [
        ({"embeddings": [[1e39, 1.0], [0.5, 0.25]]}, ["embeddings"], ["1e+39", "float32", "3.40282e+38"]),
        (
            {"embeddings": [[1.0, 2.0]], "context": [[1.0, -1e39]]},
            ["context"],
            ["-1e+39", "[0, 1]", "float32"],
        ),
        ({"query": [[1.0, 1e39]], "key": [[1.0, 1.0]], "value": [[1.0, 1.0]]}, ["query"], ["1e+39"]),
        ({"query": [[1.0, 1.0]], "key": [[1.0, 1.0]], "value": [[2e39, 1.0]]}, ["value"], ["2e+39"]),
        (
            {"embeddings": [[1.0, 2.0]], "weights": {"w_q": [[1.0, 0.0], [0.0, 5e38]], "w_k": W, "w_v": W}},
            ["weights", "w_q"],
            ["5e+38", "[1, 1]"],
        ),
        (
            {"embeddings": [[1.0, 2.0]], "weights": {"w_q": W, "w_k": W, "w_v": W, "b_k": [0.0, 1e40]}},
            ["weights", "b_k"],
            ["1e+40", "[1]"],
        ),
        ({"embeddings": [[1.0, 2.0]], "scale": 1e300}, ["scale"], ["1e+300", "float32"]),
        ({"embeddings": [[1.0, 70000.0]], "dtype": "float16"}, ["embeddings"], ["70000", "float16", "65504"]),
        ({"embeddings": [[1.0, 2.0]], "dtype": "bfloat16", "scale": 1e39}, ["scale"], ["bfloat16"]),
        ({"text": "a b", "model": "toy", "dtype": "float16", "scale": -1e5}, ["scale"], ["-100000"]),
    ],
)
def test_inputs_outside_the_dtype_range_are_422_naming_the_field(compute, body, loc, fragments):
    found_loc, msg = detail(compute.post(body))
    assert found_loc == ["body", *loc]
    for fragment in fragments:
        assert fragment in msg, msg


def test_scale_outside_the_dtype_range_is_422_for_a_model_too(compute):
    found_loc, msg = detail(compute.post({"text": "hello there", "scale": 1e300}))
    assert found_loc == ["body", "scale"] and "float32" in msg


@pytest.mark.parametrize(
    "body,tensor,wider",
    [
        # float16 values near 300: each is in range, their dot products are not
        (
            {
                "embeddings": [[300.0, 300.0], [250.0, 310.0]],
                "weights": {"init": "identity"},
                "dtype": "float16",
            },
            "scores",
            "float32",
        ),
        (  # Q itself: 60000 + 60000 is past float16's 65504
            {
                "embeddings": [[60000.0, 60000.0]],
                "weights": {"w_q": [[1.0], [1.0]], "w_k": [[0.0], [0.0]], "w_v": [[0.0], [0.0]]},
                "dtype": "float16",
            },
            "q",
            "float32",
        ),
        (  # bfloat16 has float32's range (checked in torch: numpy has no bfloat16)
            {"embeddings": [[1e20, 1.0], [0.5, 0.25]], "weights": {"init": "identity"}, "dtype": "bfloat16"},
            "scores",
            "float32 or float64",
        ),
        (  # masked entries do not hide an overflow elsewhere
            {
                "embeddings": [[1e20, 1.0], [0.5, 0.25]],
                "weights": {"init": "identity"},
                "causal": True,
                "dtype": "bfloat16",
            },
            "scores",
            "float32 or float64",
        ),
        ({"embeddings": [[1e300, 1.0], [0.5, 0.25]], "dtype": "float64"}, "scores", "widest"),
        ({"embeddings": [[1e20, 1.0], [0.5, 0.25]], "weights": {"init": "identity"}}, "scores", "float64"),
        (  # the scale is in range, the scaled scores are not
            {"embeddings": [[100.0, 1.0], [0.5, 0.25]], "weights": {"init": "identity"}, "scale": 1e36},
            "scaled_scores",
            "float64",
        ),
        (
            {
                "embeddings": [[1e19, 1e19]],
                "weights": {"w_q": W, "w_k": W, "w_v": W, "w_o": [[1e20, 0.0], [0.0, 1.0]]},
                "scale": 1e-40,
            },
            "output",
            "float64",
        ),
    ],
)
def test_a_computation_that_overflows_is_422_naming_the_tensor(compute, body, tensor, wider):
    found_loc, msg = detail(compute.post(body))
    assert found_loc == ["body", "dtype"]
    assert msg.startswith(f"the {tensor} overflowed"), msg
    assert body.get("dtype", "float32") in msg and wider in msg


def test_a_model_layer_that_overflows_is_422_naming_the_layer_and_tensor(compute):
    found_loc, msg = detail(
        compute.post({"text": "hello there", "dtype": "float16", "scale": 1e4, "layer": 2})
    )
    assert found_loc == ["body", "dtype"]
    assert "layer 2" in msg and "scaled_scores overflowed float16" in msg and "float32" in msg


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
def test_masked_entries_are_the_only_nulls(compute, dtype):
    reply = compute.post(
        {
            "embeddings": [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]],
            "causal": True,
            "attention_mask": [[1, 1, 0]],
            "dtype": dtype,
        }
    )
    assert reply.status_code == 200, reply.text
    scaled = np.asarray(reply.json()["scaled_scores"], dtype=float)  # null -> nan
    allowed = np.tril(np.ones((3, 3), dtype=bool)) & np.array([True, True, False])
    assert (np.isnan(scaled[0, 0]) == ~allowed).all()
    for name in ("q", "k", "v", "scores", "weights", "context", "output"):
        assert np.isfinite(np.asarray(reply.json()[name], dtype=float)).all(), name
