"""A computation's shapes are found once per tensor (compute/sizes.py Sizes.shape): the limits, the slicing
and meta asked for them dozens of times per request, a noticeable share of a small request's time in a compute
process (issue 26). What is remembered is what would be found again, and a copy made by dataclasses.replace
(other sizes) finds its own."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

import service.compute.sizes
from schemas.axes import TENSOR_NAMES
from service.compute.sizes import Sizes
from service.server.openapi_examples import load_golden

CAT = load_golden("seed_cat_eats_fish")
GOLDEN = {"embeddings": CAT["embeddings"], "weights": {f"w_{m}": CAT[f"w_{m}_in_out"] for m in "qkv"}}


def test_the_golden_request_finds_each_shape_once(compute, monkeypatch: pytest.MonkeyPatch):
    found: list[str] = []
    axes_of = getattr(service.compute.sizes, "tensor_axes")  # noqa: B009 (not exported: mypy)

    def counted(name: Any, grouped: bool) -> Any:
        found.append(name)
        return axes_of(name, grouped)

    monkeypatch.setattr(service.compute.sizes, "tensor_axes", counted)
    reply = compute.post(GOLDEN)
    assert reply.status_code == 200, reply.text
    # a shape found once per tensor, and the axes meta names once per returned tensor
    assert len(found) <= 2 * len(TENSOR_NAMES), found
    assert reply.json()["meta"]["shapes"]["weights"] == [1, 1, 3, 3]


def test_a_copy_with_other_sizes_finds_its_own_shapes():
    sizes = Sizes(batch=1, seq=3, seq_kv=3, d_model=4, num_heads=1, d_k=4, d_v=4, d_out=4)
    assert sizes.shape("weights") == (1, 1, 3, 3)
    longer = dataclasses.replace(sizes, seq=5, num_heads=2)
    assert longer.shape("weights") == (1, 2, 5, 3)
    assert sizes.shape("weights") == (1, 1, 3, 3)
    assert longer == dataclasses.replace(longer) and hash(longer) == hash(dataclasses.replace(longer))
