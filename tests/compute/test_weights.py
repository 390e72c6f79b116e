"""service/compute/weights.py in process: head sizes from each input form, explicit weights turned to the math
layout, and generated weights drawn as documented."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch

from schemas.request import AttendRequest
from service.compute.inputs import Extent
from service.compute.weights import resolve_sizes, resolve_weights
from service.errors import RequestError

X = [[0.8, 0.2, 0.4, 0.1], [0.1, 0.9, 0.3, 0.7], [0.3, 0.1, 0.9, 0.2]]
W = [[0.5, 0.2], [0.1, 0.3], [0.4, 0.6], [0.2, 0.1]]  # [d_model 4, d_k 2]
EXTENT = Extent(batch=1, seq=3, seq_kv=3, d_model=4)


def request(**fields: Any) -> AttendRequest:
    return AttendRequest.model_validate({"embeddings": X, **fields})


def transposed(matrix: list[list[float]]) -> list[list[float]]:
    return [list(row) for row in zip(*matrix, strict=True)]


def test_generated_weights_default_to_d_model_over_heads_and_project_back_to_d_model():
    r = request(num_heads=2)
    sizes = resolve_sizes(r, EXTENT)
    assert (sizes.num_heads, sizes.d_k, sizes.d_v, sizes.d_out) == (2, 2, 2, 4)
    p = resolve_weights(r, sizes)
    assert p.w_q is not None and p.w_o is not None and p.w_q.shape == (4, 4) and p.w_o.shape == (4, 4)
    assert p.w_q.dtype == torch.float64 and p.b_q is None


def test_without_output_projection_the_output_is_the_heads_concatenated():
    r = request(num_heads=2, d_v=3, weights={"output_projection": False})
    sizes = resolve_sizes(r, EXTENT)
    assert (sizes.d_v, sizes.d_out) == (3, 6)
    assert resolve_weights(r, sizes).w_o is None


def test_heads_that_do_not_divide_d_model_need_d_k_and_d_v():
    with pytest.raises(RequestError) as refused:
        resolve_sizes(request(num_heads=3), EXTENT)
    assert refused.value.loc == ("num_heads",) and "does not divide d_model 4" in refused.value.msg
    sizes = resolve_sizes(request(num_heads=3, d_k=2, d_v=5), EXTENT)
    assert (sizes.d_k, sizes.d_v, sizes.d_out) == (2, 5, 4)


def test_explicit_weights_in_either_layout_arrive_in_the_math_layout():
    in_out = request(weights={"w_q": W, "w_k": W, "w_v": W})
    out_in = request(
        weights={"w_q": transposed(W), "w_k": transposed(W), "w_v": transposed(W), "layout": "out_in"}
    )
    for r in (in_out, out_in):
        sizes = resolve_sizes(r, EXTENT)
        assert (sizes.d_k, sizes.d_v, sizes.d_out) == (2, 2, 2)
        p = resolve_weights(r, sizes)
        assert p.w_q is not None and p.w_o is None
        np.testing.assert_array_equal(p.w_q.numpy(), np.asarray(W))


def test_explicit_output_projection_and_biases_set_d_out():
    w_o = [[1.0, 0.0, 2.0], [0.0, 1.0, 3.0]]
    r = request(weights={"w_q": W, "w_k": W, "w_v": W, "w_o": w_o, "b_q": [1.0, 2.0], "b_o": [0.0, 0.0, 1.0]})
    sizes = resolve_sizes(r, EXTENT)
    assert sizes.d_out == 3
    p = resolve_weights(r, sizes)
    assert p.b_q is not None and p.b_q.tolist() == [1.0, 2.0] and p.b_k is None
    assert p.w_o is not None and p.w_o.tolist() == w_o


def test_given_head_sizes_must_agree_with_explicit_weights():
    with pytest.raises(RequestError) as refused:
        resolve_sizes(request(d_v=3, weights={"w_q": W, "w_k": W, "w_v": W}), EXTENT)
    assert refused.value.loc == ("d_v",) and "found d_v 3" in refused.value.msg


def test_direct_qkv_have_no_projections():
    r = AttendRequest.model_validate(
        {
            "query": [[1.0, 0.0, 1.0, 0.0]],
            "key": [[1.0, 2.0, 3.0, 4.0]],
            "value": [[1.0, 2.0]],
            "num_heads": 2,
        }
    )
    sizes = resolve_sizes(r, Extent(batch=1, seq=1, seq_kv=1, d_model=None, direct_widths=(4, 2)))
    assert (sizes.d_k, sizes.d_v, sizes.d_out, sizes.d_model) == (2, 1, 2, None)
    p = resolve_weights(r, sizes)
    assert all(getattr(p, name) is None for name in ("w_q", "w_k", "w_v", "w_o", "b_q", "b_o"))


def test_generated_draw_is_seeded_in_order_and_bounded():
    r = request(weights={"seed": 11})
    sizes = resolve_sizes(r, EXTENT)
    p, again = resolve_weights(r, sizes), resolve_weights(r, sizes)
    assert p.w_q is not None and again.w_q is not None and torch.equal(p.w_q, again.w_q)
    other = resolve_weights(request(weights={"seed": 12}), sizes)
    assert other.w_q is not None and not torch.equal(p.w_q, other.w_q)
    generator = torch.Generator().manual_seed(11)
    bound = math.sqrt(6 / (4 + 4))
    draws = [(torch.rand(4, 4, generator=generator, dtype=torch.float64) * 2 - 1) * bound for _ in range(4)]
    for name, draw in zip(("w_q", "w_k", "w_v", "w_o"), draws, strict=True):
        matrix = getattr(p, name)
        assert torch.equal(matrix, draw), name
        assert matrix.abs().max() <= bound


def test_identity_and_normal_inits():
    sizes = resolve_sizes(request(d_k=3, d_v=3), EXTENT)
    identity = resolve_weights(request(d_k=3, d_v=3, weights={"init": "identity"}), sizes)
    assert identity.w_q is not None and torch.equal(identity.w_q, torch.eye(4, 3, dtype=torch.float64))
    big = Extent(batch=1, seq=1, seq_kv=1, d_model=256)
    wide = AttendRequest.model_validate(
        {"embeddings": [[0.0] * 256], "weights": {"init": "normal", "seed": 1}}
    )
    normal = resolve_weights(wide, resolve_sizes(wide, big))
    assert normal.w_q is not None
    assert normal.w_q.std().item() == pytest.approx(1 / math.sqrt(256), rel=0.05)  # N(0, 1/d_in)
