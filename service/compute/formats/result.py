"""What a request computed, before it is encoded in the format the client asked for."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from torch import Tensor

TensorsByName = dict[str, Tensor]  # by name, in the order of schemas.axes.TENSOR_NAMES, already sliced
Layer = tuple[int, TensorsByName]  # a model's layer index and its tensors


@dataclass
class Result:
    """`tensors` of the explicit and toy path, or a model's `layers` (computed lazily, in the order of the
    forward pass, each layer at most once; `order` is the order the request named them in), the `tokens` of
    a text, and `meta(**changes)`, which writes meta as JSON when called (after the tensors are encoded, so
    that elapsed_ms counts the encoding); `changes` replace fields of it (layer, wire_dtype). `sections`: the
    top-level sections made once the layers are read (a model's predictions, service/compute/effects.py).
    `prelude` and `then`: a result that first yields events (a stream sends each as a line: the tokens of
    `generate` as they are made), then is `then()`; every other field of such a result is empty."""

    tensors: TensorsByName
    layers: Iterable[Layer] | None
    order: list[int] | None
    tokens: list[list[str]] | None
    meta: Callable[..., bytes]
    decimals: int | None
    wire_dtype: str
    sections: Callable[[], dict[str, Any]] | None = None
    prelude: Iterator[dict[str, Any]] | None = None
    then: Callable[[], Result] | None = None
    shapes: Callable[[], dict[str, list[int]]] | None = None  # meta's shapes alone (a model's: batching.py)

    @classmethod
    def deferred(cls, prelude: Iterator[dict[str, Any]], then: Callable[[], Result]) -> Result:
        return cls({}, None, None, None, lambda **_: b"{}", None, "float32", None, prelude, then)

    def settled(self) -> Result:
        """This result, or for a deferred one the result after its prelude (run, and not sent)."""
        if self.then is None:
            return self
        for _ in self.prelude or ():
            pass
        return self.then()

    def layers_in_order(self) -> list[Layer]:
        """Every layer, computed now, in the order the request named them (a layer named twice twice)."""
        computed = dict(self.layers or ())
        return [(index, computed[index]) for index in self.order or ()]
