"""The body of `POST /attend` from the arguments of `attend`, named as the wire fields (docs/api.md).

Only the arguments given are sent: a field left out gets the service's own default (which may depend on the
model, e.g. `num_heads`). Arrays travel as nested JSON lists; the service judges them (shapes, NaN, ...) and
answers a 422 naming the field."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np


def attend_body(arguments: Mapping[str, Any]) -> bytes:
    """JSON of the arguments that are not None."""
    fields = {name: value for name, value in arguments.items() if value is not None}
    if "weights" in fields and isinstance(fields["weights"], Mapping):
        fields["weights"] = {name: value for name, value in fields["weights"].items() if value is not None}
    return json.dumps(fields, default=_jsonable, ensure_ascii=False).encode()


def _jsonable(value: Any) -> Any:
    """numpy arrays and scalars, and anything numpy reads (a CPU torch tensor, ...), as nested lists; booleans
    as 0/1 (a mask of bools), since the wire takes numbers only."""
    if isinstance(value, range):
        return list(value)
    if not isinstance(value, (np.ndarray, np.generic)) and not hasattr(value, "__array__"):
        raise TypeError(f"cannot send a {type(value).__name__} as JSON; expected numbers, lists or arrays")
    array = np.asarray(value)
    if array.dtype == np.bool_:
        array = array.astype(np.int8)
    if array.dtype.kind not in "iuf":
        raise TypeError(f"cannot send an array of {array.dtype} as JSON; expected numbers")
    return array.tolist()
