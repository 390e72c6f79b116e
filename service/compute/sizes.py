"""The sizes of one computation, known before any tensor is allocated; every shape derives from them and the
axes table (schemas/axes.py). Both input paths produce one: the explicit and toy path from the request's
arrays or tokens, the pretrained path from the token counts and the model's config."""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass, field

from schemas.axes import AXIS_LENGTH, TensorName, tensor_axes


@dataclass(frozen=True)
class Sizes:
    batch: int
    seq: int  # length of the query_pos axis
    seq_kv: int  # length of the key_pos axis
    d_model: int | None  # width of the embeddings; None when Q, K, V are given directly
    num_heads: int
    d_k: int
    d_v: int
    d_out: int
    # how many times the attention is computed and returned (one per requested layer of a model)
    layers: int = 1
    kv_heads: int | None = None  # key/value heads under grouped-query attention; None: one per query head
    top_k: int = 1  # the summaries' settings (service/compute/summaries.py)
    pool: int = 1
    # each tensor's shape once found: the limits, the slicing and meta ask for them dozens of times per
    # request (a copy by dataclasses.replace starts empty)
    _shapes: dict[TensorName, tuple[int, ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )

    @property
    def rank(self) -> int:
        return min(self.top_k, self.seq_kv)

    @property
    def query_blocks(self) -> int:
        return -(-self.seq // self.pool)

    @property
    def key_blocks(self) -> int:
        return -(-self.seq_kv // self.pool)

    @property
    def num_kv_heads(self) -> int:
        return self.num_heads if self.kv_heads is None else self.kv_heads

    @property
    def grouped(self) -> bool:
        """Grouped-query attention: fewer key/value heads than query heads (k and v have the kv_head axis)."""
        return self.num_kv_heads != self.num_heads

    def axes(self, name: TensorName) -> tuple[str, ...]:
        return tensor_axes(name, self.grouped)

    def shape(self, name: TensorName) -> tuple[int, ...]:
        known = self._shapes.get(name)
        if known is None:
            known = self._shapes[name] = _lengths_of(self.axes(name))(self)
        return known

    def elements(self, name: TensorName) -> int:
        return math.prod(self.shape(name))

    @property
    def input_width(self) -> int:
        """The last axis of the inputs: d_model, or heads*d_k when Q, K, V are given directly."""
        return self.d_model if self.d_model is not None else self.num_heads * self.d_k

    @property
    def weight_elements(self) -> int:
        """Numbers in W_q, W_k, W_v and W_o (counted from the input width also when Q, K, V are given directly
        and have none: the estimate errs on the safe side)."""
        heads, kv_heads = self.num_heads, self.num_kv_heads
        return (
            self.input_width * (heads * self.d_k + kv_heads * (self.d_k + self.d_v))
            + heads * self.d_v * self.d_out
        )


@functools.cache
def _lengths_of(axes: tuple[str, ...]) -> Callable[[Sizes], tuple[int, ...]]:
    """The lengths of these axes, read from a Sizes by one attrgetter call (a generator of getattr calls cost
    a small request microseconds per tensor: issue 26)."""
    names = [AXIS_LENGTH[axis] for axis in axes]
    if len(names) < 2:  # attrgetter of one name gives the value itself (and of none, an error)
        return lambda sizes: tuple(getattr(sizes, name) for name in names)
    return operator.attrgetter(*names)
