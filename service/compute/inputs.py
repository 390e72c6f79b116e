"""The explicit input forms (embeddings with an optional context, or Q, K, V given directly) resolved into
batched arrays whose shapes fit together."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from schemas.request import AttendRequest
from service.errors import RequestError


@dataclass(frozen=True)
class Extent:
    """The lengths of the inputs' axes, all that the sizes of a computation need from them."""

    batch: int
    seq: int
    seq_kv: int
    d_model: int | None  # None when Q, K, V are given directly
    direct_widths: tuple[int, int] | None = None  # heads*d_k of Q and K, heads*d_v of V, when given directly


@dataclass(frozen=True)
class Inputs:
    """Batched inputs of the attention module: what W_q, W_k, W_v project (X, C, C), or Q, K, V themselves."""

    query_input: np.ndarray  # [batch, query_pos, d_model] or [batch, query_pos, heads*d_k]
    key_input: np.ndarray  # [batch, key_pos, d_model] or [batch, key_pos, heads*d_k]
    value_input: np.ndarray  # [batch, key_pos, d_model] or [batch, key_pos, heads*d_v]
    key_mask: np.ndarray | None  # [batch, key_pos] bool, True = attend
    direct: bool  # Q, K, V given directly

    @property
    def extent(self) -> Extent:
        batch, seq, width = self.query_input.shape
        seq_kv = self.key_input.shape[1]
        if self.direct:
            return Extent(batch, seq, seq_kv, None, (width, self.value_input.shape[2]))
        return Extent(batch, seq, seq_kv, width)


def _batched(array: np.ndarray) -> np.ndarray:
    return array[None] if array.ndim == 2 else array


def _shape(array: np.ndarray) -> str:
    return str(list(array.shape))


def _check_batch(name: str, array: np.ndarray, batch: int, against: str) -> None:
    if array.shape[0] != batch:
        raise RequestError(
            (name,),
            f"found batch {array.shape[0]} (shape {_shape(array)}); expected batch {batch} as in {against}",
        )


def _embeddings(x: np.ndarray, context: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """X and C (X itself in self-attention)."""
    if context is None:
        return x, x
    source = _batched(context)
    _check_batch("context", source, x.shape[0], "embeddings")
    if source.shape[2] != x.shape[2]:
        raise RequestError(
            ("context",),
            f"found d_model {source.shape[2]} (shape {_shape(source)}); "
            f"expected d_model {x.shape[2]} as in embeddings",
        )
    return x, source


def _direct(
    query: np.ndarray, key: np.ndarray, value: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    q, k, v = _batched(query), _batched(key), _batched(value)
    _check_batch("key", k, q.shape[0], "query")
    _check_batch("value", v, q.shape[0], "query")
    if k.shape[2] != q.shape[2]:
        raise RequestError(
            ("key",),
            f"found last axis {k.shape[2]} (shape {_shape(k)}); "
            f"expected {q.shape[2]} (heads*d_k) as in query",
        )
    if v.shape[1] != k.shape[1]:
        raise RequestError(
            ("value",),
            f"found seq_kv {v.shape[1]} (shape {_shape(v)}); expected seq_kv {k.shape[1]} as in key",
        )
    return q, k, v


def _key_mask(mask: np.ndarray, batch: int, seq_kv: int) -> np.ndarray:
    expected = [batch, seq_kv]
    if list(mask.shape) != expected:
        raise RequestError(
            ("attention_mask",), f"found shape {_shape(mask)}; expected [batch, seq_kv] = {expected}"
        )
    valid = np.isin(mask, (0.0, 1.0))
    if not valid.all():
        raise RequestError(
            ("attention_mask",),
            f"found the value {mask[~valid][0]:g}; expected only 0 (masked) and 1 (attend)",
        )
    return mask.astype(bool)


def resolve_inputs(request: AttendRequest) -> Inputs:
    if request.embeddings is not None:
        x, source = _embeddings(_batched(request.embeddings), request.context)
        query_input, key_input, value_input = x, source, source
    else:
        # the schema's
        assert request.query is not None and request.key is not None and request.value is not None
        query_input, key_input, value_input = _direct(request.query, request.key, request.value)
    key_mask = None
    if request.attention_mask is not None:
        key_mask = _key_mask(request.attention_mask, query_input.shape[0], key_input.shape[1])
    return Inputs(query_input, key_input, value_input, key_mask, direct=request.embeddings is None)
