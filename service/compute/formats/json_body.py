"""application/json: the whole response as one JSON object (service/compute/encoding.py)."""

from __future__ import annotations

from typing import Any

from service.compute.encoding import encode
from service.compute.formats.result import Result


def json_body(result: Result) -> bytes:
    """The tensors (or `layers`, in the order the request named them), then a model's top-level sections
    (predictions), then `tokens`, then `meta`."""
    result = result.settled()
    sections: dict[str, Any] = dict(result.tensors)
    if result.layers is not None:
        sections["layers"] = [{"layer": index, **tensors} for index, tensors in result.layers_in_order()]
    if result.sections is not None:
        sections |= result.sections()
    if result.tokens is not None:
        sections["tokens"] = result.tokens
    return encode(sections, result.decimals, result.meta)
