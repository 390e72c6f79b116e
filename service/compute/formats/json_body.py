"""application/json: the whole response as one JSON object (service/compute/encoding.py), made in pieces."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from service.compute.encoding import encode_pieces
from service.compute.formats.result import Result


def json_pieces(result: Result) -> Iterator[bytes | memoryview]:
    """The tensors (or `layers`, in the order the request named them), then a model's top-level sections
    (predictions), then `tokens`, then `meta`, in pieces of about a megabyte at most. Every layer is
    computed before the first piece is made, so that a request that fails (an overflow in its last layer)
    fails before any byte of its answer is sent; each layer's tensors are dropped once written."""
    result = result.settled()
    sections: dict[str, Any] = dict(result.tensors)
    if result.layers is not None:
        sections["layers"] = [{"layer": index, **tensors} for index, tensors in result.layers_in_order()]
    if result.sections is not None:
        sections |= result.sections()
    if result.tokens is not None:
        sections["tokens"] = result.tokens
    return encode_pieces(sections, result.decimals, result.meta)


def json_body(result: Result) -> bytes:
    """The same JSON object in one piece."""
    return b"".join(json_pieces(result))
