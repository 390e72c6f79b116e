"""`heads` and `queries`: which entries of the `head` and `query_pos` axes a response returns. Checked
against the sizes before anything is computed; the 413 estimate and `meta.shapes` count only the selection,
and the tensors are cut before anything is encoded."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from schemas.axes import TensorName, tensor_axes
from schemas.request import AttendRequest
from service.compute.sizes import Sizes
from service.errors import RequestError

# the request field that selects entries of each axis
SELECTED_AXES = {"heads": "head", "queries": "query_pos"}


@dataclass(frozen=True)
class Selection:
    """The selected indexes of each axis that has a selection (`head`, `query_pos`). Under grouped-query
    attention k and v have a `kv_head` axis instead of `head`, which `heads` leaves whole (meta.kv_head_of
    says which of them each query head reads)."""

    indexes: dict[str, tuple[int, ...]]
    grouped: bool = False

    @classmethod
    def of(cls, request: AttendRequest, sizes: Sizes) -> Selection:
        """The request's `heads` and `queries`, each index checked against the axis's length (422 naming the
        index). Sorted and distinct is the schema's to check."""
        lengths = {"head": sizes.num_heads, "query_pos": sizes.seq}
        indexes: dict[str, tuple[int, ...]] = {}
        for field, axis in SELECTED_AXES.items():
            chosen = getattr(request, field)
            if chosen is None:
                continue
            length = lengths[axis]
            if chosen[-1] >= length:  # sorted: the last is the largest
                at = next(position for position, index in enumerate(chosen) if index >= length)
                what = f"{length} heads" if axis == "head" else f"{length} query positions"
                raise RequestError(
                    (field, at), f"found {chosen[at]}; expected an index from 0 to {length - 1} ({what})"
                )
            indexes[axis] = tuple(chosen)
        return cls(indexes, sizes.grouped)

    def shape(self, sizes: Sizes, name: TensorName) -> tuple[int, ...]:
        """The shape of `name` as returned."""
        full = sizes.shape(name)
        if not self.indexes:  # nothing selected (most requests): the shape itself
            return full
        return tuple(
            len(self.indexes[axis]) if axis in self.indexes else length
            for axis, length in zip(tensor_axes(name, self.grouped), full, strict=True)
        )

    def elements(self, sizes: Sizes, name: TensorName) -> int:
        return sizes.elements(name) if not self.indexes else math.prod(self.shape(sizes, name))

    def cut(self, name: TensorName, tensor: torch.Tensor) -> torch.Tensor:
        """`tensor` restricted to the selection (a copy of the selected entries; the tensor itself when
        nothing of its axes is selected)."""
        if not self.indexes:  # nothing selected (most requests)
            return tensor
        for dim, axis in enumerate(tensor_axes(name, self.grouped)):
            if axis in self.indexes:
                chosen = torch.tensor(self.indexes[axis], device=tensor.device)
                tensor = tensor.index_select(dim, chosen)
        return tensor

    def about(self) -> dict[str, list[int] | None]:
        """`meta.heads` and `meta.queries`."""
        return {field: _listed(self.indexes.get(axis)) for field, axis in SELECTED_AXES.items()}


def _listed(indexes: tuple[int, ...] | None) -> list[int] | None:
    return None if indexes is None else list(indexes)


EVERYTHING = Selection({})
