"""The head sizes and the projection weights of the explicit and toy path, checked against the inputs.

Weights are held in the math layout (in_out: Q = X @ W_q, W_q of shape [d_model, heads*d_k]) whatever
layout they arrived in, so the attention module has one convention only.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from torch import Tensor

from schemas.request import AttendRequest, WeightSpec
from service.compute.attention import Projections
from service.compute.inputs import Extent
from service.compute.sizes import Sizes
from service.errors import RequestError

MATRICES = ("w_q", "w_k", "w_v", "w_o")
BIASES = ("b_q", "b_k", "b_v", "b_o")


def _in_out(spec: WeightSpec, name: str) -> np.ndarray:
    matrix: np.ndarray = getattr(spec, name)
    return matrix.T if spec.layout == "out_in" else matrix


def _per_head(total: int, num_heads: int, what: str) -> int:
    if total % num_heads:
        raise RequestError(
            ("num_heads",),
            f"num_heads {num_heads} does not divide {what} {total}; expected a num_heads that divides it",
        )
    return total // num_heads


def _check_given(request: AttendRequest, name: str, derived: int) -> None:
    given = getattr(request, name)
    if given is not None and given != derived:
        raise RequestError(
            (name,),
            f"found {name} {given}; the tensors give {name} {derived} (per head, with num_heads "
            f"{request.head_count})",
        )


def _layout_hint(spec: WeightSpec) -> str:
    other = "out_in" if spec.layout == "in_out" else "in_out"
    return f' (layout "{spec.layout}"; if the matrix is stored the other way round, set layout "{other}")'


def _check_matrix(
    spec: WeightSpec, name: str, rows: int | None, cols: int | None, axes: tuple[str, str]
) -> np.ndarray:
    """The matrix in the in_out layout, once its shape is [rows, cols] (None: any), else a 422 naming
    `axes`."""
    matrix = _in_out(spec, name)
    found_rows, found_cols = matrix.shape
    if (rows is not None and found_rows != rows) or (cols is not None and found_cols != cols):
        expected = [str(rows) if rows is not None else axes[0], str(cols) if cols is not None else axes[1]]
        if spec.layout == "out_in":
            expected.reverse()
        raise RequestError(
            ("weights", name),
            f"found shape {list(getattr(spec, name).shape)}; "
            f"expected [{', '.join(expected)}]{_layout_hint(spec)}",
        )
    return matrix


def _check_bias(spec: WeightSpec, name: str, size: int, what: str) -> None:
    bias = getattr(spec, name)
    if bias is not None and bias.shape != (size,):
        raise RequestError(("weights", name), f"found shape {list(bias.shape)}; expected [{size}] ({what})")


def _direct_heads(request: AttendRequest, widths: tuple[int, int]) -> tuple[int, int, int]:
    heads = request.head_count
    d_k = _per_head(widths[0], heads, "the last axis of query")
    d_v = _per_head(widths[1], heads, "the last axis of value")
    return d_k, d_v, heads * d_v


def _explicit_heads(request: AttendRequest, spec: WeightSpec, d_model: int) -> tuple[int, int, int]:
    heads = request.head_count
    w_q = _check_matrix(spec, "w_q", d_model, None, ("d_model", "heads*d_k"))
    _check_matrix(spec, "w_k", d_model, w_q.shape[1], ("d_model", "heads*d_k"))
    w_v = _check_matrix(spec, "w_v", d_model, None, ("d_model", "heads*d_v"))
    d_k = _per_head(w_q.shape[1], heads, "heads*d_k of w_q")
    d_v = _per_head(w_v.shape[1], heads, "heads*d_v of w_v")
    d_out = heads * d_v
    if spec.w_o is not None:
        d_out = _check_matrix(spec, "w_o", heads * d_v, None, ("heads*d_v", "d_out")).shape[1]
    for name, size, what in (
        ("b_q", heads * d_k, "heads*d_k"),
        ("b_k", heads * d_k, "heads*d_k"),
        ("b_v", heads * d_v, "heads*d_v"),
        ("b_o", d_out, "d_out"),
    ):
        _check_bias(spec, name, size, what)
    return d_k, d_v, d_out


def _generated_heads(request: AttendRequest, d_model: int) -> tuple[int, int, int]:
    heads = request.head_count
    default = None if d_model % heads else d_model // heads
    d_k = request.d_k or default
    d_v = request.d_v or default
    if d_k is None or d_v is None:
        raise RequestError(
            ("num_heads",),
            f"num_heads {heads} does not divide d_model {d_model}, so d_k and d_v have no default; "
            "expected a divisor of d_model, or d_k and d_v given",
        )
    projection = request.weights.output_projection if request.weights is not None else True
    return d_k, d_v, d_model if projection else heads * d_v


def resolve_sizes(request: AttendRequest, extent: Extent) -> Sizes:
    """The sizes of the computation: the inputs' lengths, and head sizes from Q/K/V given directly, from
    explicit weights, or from the request (generated weights)."""
    spec = request.weights
    if extent.direct_widths is not None:
        d_k, d_v, d_out = _direct_heads(request, extent.direct_widths)
    elif spec is not None and spec.explicit:
        assert extent.d_model is not None
        d_k, d_v, d_out = _explicit_heads(request, spec, extent.d_model)
    else:
        assert extent.d_model is not None
        d_k, d_v, d_out = _generated_heads(request, extent.d_model)
    if extent.direct_widths is not None or (spec is not None and spec.explicit):
        _check_given(request, "d_k", d_k)
        _check_given(request, "d_v", d_v)
    return Sizes(extent.batch, extent.seq, extent.seq_kv, extent.d_model, request.head_count, d_k, d_v, d_out)


def _generate(init: str, generator: torch.Generator, d_in: int, d_out: int) -> Tensor:
    if init == "identity":
        return torch.eye(d_in, d_out, dtype=torch.float64)
    if init == "normal":
        return torch.randn(d_in, d_out, generator=generator, dtype=torch.float64) / math.sqrt(d_in)
    bound = math.sqrt(6.0 / (d_in + d_out))
    return (torch.rand(d_in, d_out, generator=generator, dtype=torch.float64) * 2 - 1) * bound


def resolve_weights(request: AttendRequest, sizes: Sizes) -> Projections:
    """float64 CPU tensors: none for Q/K/V given directly, explicit matrices turned to the in_out layout, or
    generated from init and seed."""
    spec = request.weights
    if sizes.d_model is None:
        return Projections()
    if spec is not None and spec.explicit:
        matrices = {
            n: torch.from_numpy(np.ascontiguousarray(_in_out(spec, n)))
            for n in MATRICES
            if getattr(spec, n) is not None
        }
        biases = {n: torch.from_numpy(getattr(spec, n)) for n in BIASES if getattr(spec, n) is not None}
        return Projections(**matrices, **biases)
    spec = spec or WeightSpec()
    widths = (sizes.d_model, sizes.num_heads * sizes.d_k, sizes.num_heads * sizes.d_v)
    settings = (spec.init, spec.seed, *widths, spec.output_projection)
    if sizes.weight_elements <= CACHED_WEIGHT_ELEMENTS:
        return _generated_and_kept(*settings)
    return _generated(*settings)


# generated weights of at most this many numbers (8 MB in float64) are kept for the next request with the same
# settings (at most KEPT of them): drawing them costs more than the rest of a 128 x 384 request
CACHED_WEIGHT_ELEMENTS = 2**20
KEPT = 4


def _generated(
    init: str, seed: int, d_model: int, width_qk: int, width_v: int, output_projection: bool
) -> Projections:
    """W_q, W_k, W_v (and W_o) drawn in this order from one generator seeded with `seed`. Callers never
    change the tensors (kept ones are shared)."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    return Projections(
        w_q=_generate(init, generator, d_model, width_qk),
        w_k=_generate(init, generator, d_model, width_qk),
        w_v=_generate(init, generator, d_model, width_v),
        w_o=_generate(init, generator, width_v, d_model) if output_projection else None,
    )


_generated_and_kept = functools.lru_cache(maxsize=KEPT)(_generated)
