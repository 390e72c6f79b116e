"""Step 1 of a request: the input form resolved into batched arrays whose shapes fit together."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from schemas.request import AttendRequest
from service.errors import RequestError


@dataclass(frozen=True)
class Inputs:
    """Batched inputs. With embeddings: x is X and source is C (X itself for self-attention).
    With query/key/value: x is Q, source is K and value is V, and d_model is None."""

    x: np.ndarray  # [batch, seq, d_model] or [batch, seq, heads*d_k]
    source: np.ndarray  # [batch, seq_kv, d_model] or [batch, seq_kv, heads*d_k]
    value: np.ndarray | None  # [batch, seq_kv, heads*d_v], only for Q/K/V given directly
    key_mask: np.ndarray | None  # [batch, seq_kv] bool, True = attend
    self_attention: bool

    @property
    def batch(self) -> int:
        return self.x.shape[0]

    @property
    def seq(self) -> int:
        return self.x.shape[1]

    @property
    def seq_kv(self) -> int:
        return self.source.shape[1]

    @property
    def d_model(self) -> int | None:
        return None if self.value is not None else self.x.shape[2]


def _batched(array: np.ndarray) -> np.ndarray:
    return array[None] if array.ndim == 2 else array


def _shape(array: np.ndarray) -> str:
    return str(list(array.shape))


def _check_batch(name: str, array: np.ndarray, batch: int, against: str) -> None:
    if array.shape[0] != batch:
        raise RequestError((name,), f"found batch {array.shape[0]} (shape {_shape(array)}); expected batch {batch} "
                                    f"as in {against}")


def resolve_inputs(request: AttendRequest) -> Inputs:
    if request.embeddings is not None:
        x = _batched(request.embeddings)
        source = x
        if request.context is not None:
            source = _batched(request.context)
            _check_batch("context", source, x.shape[0], "embeddings")
            if source.shape[2] != x.shape[2]:
                raise RequestError(("context",), f"found d_model {source.shape[2]} (shape {_shape(source)}); expected "
                                                 f"d_model {x.shape[2]} as in embeddings")
        value = None
    else:
        x, source, value = (_batched(a) for a in (request.query, request.key, request.value))
        _check_batch("key", source, x.shape[0], "query")
        _check_batch("value", value, x.shape[0], "query")
        if source.shape[2] != x.shape[2]:
            raise RequestError(("key",), f"found last axis {source.shape[2]} (shape {_shape(source)}); expected "
                                         f"{x.shape[2]} (heads*d_k) as in query")
        if value.shape[1] != source.shape[1]:
            raise RequestError(("value",), f"found seq_kv {value.shape[1]} (shape {_shape(value)}); expected seq_kv "
                                           f"{source.shape[1]} as in key")
    key_mask = None
    if request.attention_mask is not None:
        mask = request.attention_mask
        expected = [x.shape[0], source.shape[1]]
        if list(mask.shape) != expected:
            raise RequestError(("attention_mask",), f"found shape {_shape(mask)}; expected [batch, seq_kv] = {expected}")
        if not np.isin(mask, (0.0, 1.0)).all():
            bad = mask[~np.isin(mask, (0.0, 1.0))][0]
            raise RequestError(("attention_mask",), f"found the value {bad:g}; expected only 0 (masked) and 1 (attend)")
        key_mask = mask.astype(bool)
    self_attention = request.embeddings is not None and request.context is None
    return Inputs(x=x, source=source, value=value, key_mask=key_mask, self_attention=self_attention)
