"""What a request computed, before it is encoded in the format the client asked for."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from torch import Tensor

TensorsByName = dict[str, Tensor]  # by name, in the order of schemas.axes.TENSOR_NAMES, already sliced
Layer = tuple[int, TensorsByName]  # a model's layer index and its tensors


@dataclass
class Result:
    """`tensors` of the explicit and toy path, or a model's `layers` (computed lazily, in the order of the
    forward pass, each layer at most once; `order` is the order the request named them in), the `tokens` of
    a text, and `meta(**changes)`, which writes meta as JSON when called (after the tensors are encoded, so
    that elapsed_ms counts the encoding); `changes` replace fields of it (layer, wire_dtype)."""

    tensors: TensorsByName
    layers: Iterable[Layer] | None
    order: list[int] | None
    tokens: list[list[str]] | None
    meta: Callable[..., bytes]
    decimals: int | None
    wire_dtype: str

    def layers_in_order(self) -> list[Layer]:
        """Every layer, computed now, in the order the request named them (a layer named twice twice)."""
        computed = dict(self.layers or ())
        return [(index, computed[index]) for index in self.order or ()]
