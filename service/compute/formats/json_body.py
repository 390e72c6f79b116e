"""application/json: the whole response as one JSON object (service/compute/encoding.py)."""

from __future__ import annotations

from typing import Any

from service.compute.encoding import encode
from service.compute.formats.result import Result


def json_body(result: Result) -> bytes:
    """The tensors (or `layers`, in the order the request named them), then `tokens`, then `meta`."""
    sections: dict[str, Any] = dict(result.tensors)
    if result.layers is not None:
        sections["layers"] = [{"layer": index, **tensors} for index, tensors in result.layers_in_order()]
    if result.tokens is not None:
        sections["tokens"] = result.tokens
    return encode(sections, result.decimals, result.meta)
