"""Step 2 of a request: the head sizes and the projection weights, checked against the inputs.

Weights are held in the math layout (in_out: Q = X @ W_q, W_q of shape [d_model, heads*d_k]) whatever
layout they arrived in, so the attention module has one convention only.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from schemas.request import AttendRequest, WeightSpec
from service.errors import RequestError
from service.inputs import Inputs


@dataclass(frozen=True)
class Dims:
    num_heads: int
    d_k: int
    d_v: int
    d_out: int
    output_projection: bool


@dataclass(frozen=True)
class Projections:
    """Weights in the in_out layout; a missing matrix means no projection, a missing bias no bias."""

    w_q: Tensor | None = None  # [d_model, heads*d_k]
    w_k: Tensor | None = None  # [d_model, heads*d_k]
    w_v: Tensor | None = None  # [d_model, heads*d_v]
    w_o: Tensor | None = None  # [heads*d_v, d_out]
    b_q: Tensor | None = None  # [heads*d_k]
    b_k: Tensor | None = None  # [heads*d_k]
    b_v: Tensor | None = None  # [heads*d_v]
    b_o: Tensor | None = None  # [d_out]

    def to(self, convert: Callable[[Tensor], Tensor]) -> Projections:
        return Projections(**{name: None if t is None else convert(t) for name, t in vars(self).items()})


def _in_out(spec: WeightSpec, name: str) -> np.ndarray | None:
    matrix = getattr(spec, name)
    return None if matrix is None else (matrix.T if spec.layout == "out_in" else matrix)


def _per_head(total: int, num_heads: int, what: str, field: str) -> int:
    if total % num_heads:
        raise RequestError((field,), f"num_heads {num_heads} does not divide {what} {total}; expected a num_heads that "
                                     f"divides it")
    return total // num_heads


def _check_given(request: AttendRequest, name: str, derived: int) -> None:
    given = getattr(request, name)
    if given is not None and given != derived:
        raise RequestError((name,), f"found {name} {given}; the tensors give {name} {derived} "
                                    f"(per head, with num_heads {request.num_heads})")


def _layout_hint(spec: WeightSpec) -> str:
    other = "out_in" if spec.layout == "in_out" else "in_out"
    return f' (layout "{spec.layout}"; if the matrix is stored the other way round, set layout "{other}")'


def _check_matrix(spec: WeightSpec, name: str, rows: int | None, cols: int | None, rows_is: str, cols_is: str):
    matrix = _in_out(spec, name)
    found_rows, found_cols = matrix.shape
    if (rows is not None and found_rows != rows) or (cols is not None and found_cols != cols):
        expected = [rows if rows is not None else rows_is, cols if cols is not None else cols_is]
        if spec.layout == "out_in":
            expected.reverse()
        raise RequestError(("weights", name), f"found shape {list(getattr(spec, name).shape)}; expected "
                                              f"[{', '.join(map(str, expected))}]{_layout_hint(spec)}")
    return matrix


def _check_bias(spec: WeightSpec, name: str, size: int, what: str) -> None:
    bias = getattr(spec, name)
    if bias is not None and bias.shape != (size,):
        raise RequestError(("weights", name), f"found shape {list(bias.shape)}; expected [{size}] ({what})")


def resolve_dims(request: AttendRequest, inputs: Inputs) -> Dims:
    heads = request.num_heads
    spec = request.weights
    if inputs.value is not None:
        d_k = _per_head(inputs.x.shape[2], heads, "the last axis of query", "num_heads")
        d_v = _per_head(inputs.value.shape[2], heads, "the last axis of value", "num_heads")
        dims = Dims(heads, d_k, d_v, heads * d_v, output_projection=False)
    elif spec is not None and spec.explicit:
        d_model = inputs.d_model
        w_q = _check_matrix(spec, "w_q", d_model, None, "d_model", "heads*d_k")
        _check_matrix(spec, "w_k", d_model, w_q.shape[1], "d_model", "heads*d_k")
        w_v = _check_matrix(spec, "w_v", d_model, None, "d_model", "heads*d_v")
        d_k = _per_head(w_q.shape[1], heads, "heads*d_k of w_q", "num_heads")
        d_v = _per_head(w_v.shape[1], heads, "heads*d_v of w_v", "num_heads")
        d_out = heads * d_v
        if spec.w_o is not None:
            d_out = _check_matrix(spec, "w_o", heads * d_v, None, "heads*d_v", "d_out").shape[1]
        for name, size, what in (("b_q", heads * d_k, "heads*d_k"), ("b_k", heads * d_k, "heads*d_k"),
                                 ("b_v", heads * d_v, "heads*d_v"), ("b_o", d_out, "d_out")):
            _check_bias(spec, name, size, what)
        dims = Dims(heads, d_k, d_v, d_out, output_projection=spec.w_o is not None)
    else:
        d_model = inputs.d_model
        default = None if d_model % heads else d_model // heads
        d_k = request.d_k or default
        d_v = request.d_v or default
        if d_k is None or d_v is None:
            raise RequestError(("num_heads",), f"num_heads {heads} does not divide d_model {d_model}, so d_k and d_v "
                                               "have no default; expected a divisor of d_model, or d_k and d_v given")
        projection = spec.output_projection if spec is not None else True
        return Dims(heads, d_k, d_v, d_model if projection else heads * d_v, output_projection=projection)
    _check_given(request, "d_k", dims.d_k)
    _check_given(request, "d_v", dims.d_v)
    return dims


def _generate(init: str, generator: torch.Generator, d_in: int, d_out: int) -> Tensor:
    if init == "identity":
        return torch.eye(d_in, d_out, dtype=torch.float64)
    if init == "normal":
        return torch.randn(d_in, d_out, generator=generator, dtype=torch.float64) / math.sqrt(d_in)
    bound = math.sqrt(6.0 / (d_in + d_out))
    return (torch.rand(d_in, d_out, generator=generator, dtype=torch.float64) * 2 - 1) * bound


def resolve_weights(request: AttendRequest, inputs: Inputs, dims: Dims) -> Projections:
    """float64 CPU tensors: explicit matrices turned to the in_out layout, or generated from init and seed."""
    spec = request.weights
    if inputs.value is not None:
        return Projections()
    if spec is not None and spec.explicit:
        tensors = {name: torch.from_numpy(np.ascontiguousarray(_in_out(spec, name)))
                   for name in ("w_q", "w_k", "w_v", "w_o") if getattr(spec, name) is not None}
        biases = {name: torch.from_numpy(getattr(spec, name))
                  for name in ("b_q", "b_k", "b_v", "b_o") if getattr(spec, name) is not None}
        return Projections(**tensors, **biases)
    spec = spec or WeightSpec()
    generator = torch.Generator(device="cpu").manual_seed(spec.seed)
    heads, d_model = dims.num_heads, inputs.d_model
    return Projections(
        w_q=_generate(spec.init, generator, d_model, heads * dims.d_k),
        w_k=_generate(spec.init, generator, d_model, heads * dims.d_k),
        w_v=_generate(spec.init, generator, d_model, heads * dims.d_v),
        w_o=_generate(spec.init, generator, heads * dims.d_v, d_model) if dims.output_projection else None,
    )
