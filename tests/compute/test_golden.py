"""The worked examples of shared/golden/ through the pipeline (in process), in both layouts and both
scales."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from devtools.paths import shared
from service.server.openapi_examples import GOLDEN, load_golden

CAT = load_golden("seed_cat_eats_fish")
AGE = load_golden("seed_age_lookup")
TOLERANCE = {"float64": 1e-9, "float32": 1e-6}


def head0(response: dict[str, Any], name: str) -> np.ndarray:
    """The single head of batch item 0, checking the leading axes exist."""
    array = np.asarray(response[name], dtype=np.float64)
    if name == "output":
        assert array.shape[0] == 1
        return np.asarray(array[0])
    assert array.shape[:2] == (1, 1)
    return np.asarray(array[0, 0])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("layout", ["in_out", "out_in"])
def test_cat_eats_fish(compute, layout, dtype):
    weights = {f"w_{m}": CAT[f"w_{m}_{layout}"] for m in "qkv"}
    response = compute.post(
        {"embeddings": CAT["embeddings"], "weights": {**weights, "layout": layout}, "dtype": dtype}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["meta"]["scale"] == pytest.approx(CAT["scale"], abs=1e-15)
    assert body["meta"]["layout"] == layout
    for name, expected in CAT["expected"].items():
        np.testing.assert_allclose(head0(body, name), expected, atol=TOLERANCE[dtype], err_msg=name)
    # without W_o the output is the single head's context
    np.testing.assert_array_equal(head0(body, "context"), head0(body, "output"))
    np.testing.assert_allclose(head0(body, "weights").sum(-1), 1.0, atol=TOLERANCE[dtype])


def test_cat_eats_fish_layouts_are_not_interchangeable(compute):
    """The layout pitfall: the torch-layout matrices read as math layout are a shape error, never a silent
    result."""
    weights = {f"w_{m}": CAT[f"w_{m}_out_in"] for m in "qkv"}
    response = compute.post({"embeddings": CAT["embeddings"], "weights": weights})
    assert response.status_code == 422
    msg = response.json()["detail"][0]["msg"]
    assert "found shape [2, 4]" in msg and "expected [4, heads*d_k]" in msg and 'layout "out_in"' in msg


@pytest.mark.parametrize("case,scale", [("expected_scaled", None), ("expected_unscaled", 1.0)])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_age_lookup(compute, case, scale, dtype):
    request = {"query": AGE["query"], "key": AGE["key"], "value": AGE["value"], "dtype": dtype}
    if scale is not None:
        request["scale"] = scale
    response = compute.post(request)
    assert response.status_code == 200, response.text
    body = response.json()
    expected = AGE[case]
    assert body["meta"]["scale"] == pytest.approx(expected["scale"], abs=1e-15)
    assert body["meta"]["weights_source"] == "none" and body["meta"]["d_model"] is None
    for name in ("scores", "weights", "output"):
        np.testing.assert_allclose(head0(body, name), expected[name], atol=TOLERANCE[dtype], err_msg=name)
    # the soft look-up: the output is the weighted average of the ages
    ages = np.asarray(AGE["value"])[:, 0]
    assert head0(body, "output")[0, 0] == pytest.approx(float(head0(body, "weights")[0] @ ages), abs=1e-5)


def test_vendored_golden_matches_shared():
    """service/golden/ (shipped with the service for the Swagger examples) must equal shared/golden/."""
    shared_golden = shared("golden")
    names = sorted(p.name for p in shared_golden.glob("*.json"))
    assert names == sorted(p.name for p in GOLDEN.glob("*.json"))
    for name in names:
        assert json.loads((shared_golden / name).read_text()) == json.loads((GOLDEN / name).read_text()), name
