"""A 200 of `POST /attend` into an `Attention`, by the media type the service answered with.

JSON is the one format today; a binary one (docs/api.md, "Formats, slicing and streaming") is one more entry
of DECODERS, picked by the response's Content-Type, with the request's Accept set from a `format` option."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, cast

import httpx
import numpy as np

from attention_client.errors import ResponseError
from attention_client.result import Attention, FloatArray, Layers, Predictions, Tensors
from attention_client.wire import INTEGER_TENSORS, Meta

JSON = "application/json"
SECTIONS = ("predictions", "predictions_clean", "output_similarity")  # a model's top-level sections


def decode(response: httpx.Response) -> Attention:
    media_type = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    decoder = DECODERS.get(media_type)
    if decoder is None:
        raise ResponseError(f"found a response of {media_type or 'no Content-Type'}; expected {JSON}")
    return decoder(response.content, response.headers.get("x-request-id"))


def from_json(content: bytes, request_id: str | None) -> Attention:
    try:
        body = json.loads(content)
        meta: Meta = body["meta"]
        axes: dict[str, list[str]] = meta["axes"]
        shapes: dict[str, list[int]] = meta.get("shapes", {})
    except (ValueError, KeyError, TypeError) as error:
        raise ResponseError(f"found a response without a readable `meta.axes` ({error!r})") from None
    kv_head_of = _kv_head_of(meta) if any("kv_head" in names for names in axes.values()) else None

    def tensors_of(part: Mapping[str, Any], where: str) -> dict[str, FloatArray]:
        # every field that meta.axes names is a tensor, also one this client does not know yet
        return {
            name: _array(value, axes[name], shapes.get(name), where + name)
            for name, value in part.items()
            if name in axes and name not in SECTIONS
        }

    layers: dict[int, Tensors] = {}
    for entry in body.get("layers") or []:
        index = entry.get("layer") if isinstance(entry, dict) else None
        if not isinstance(index, int):
            raise ResponseError(f"found an entry of `layers` without its `layer` index: {str(entry)[:100]}")
        layers[index] = Tensors(
            tensors_of(entry, f"layers[{index}]."), _axes(axes), f" in layer {index}", kv_head_of=kv_head_of
        )
    similarity = body.get("output_similarity")
    return Attention(
        tensors_of(body, ""),
        _axes(axes),
        layers=Layers(layers),
        tokens=body.get("tokens") or [],
        meta=meta,
        request_id=request_id,
        predictions=_predictions(body, "predictions", axes, shapes),
        predictions_clean=_predictions(body, "predictions_clean", axes, shapes),
        output_similarity=None
        if similarity is None
        else _array(
            similarity, axes["output_similarity"], shapes.get("output_similarity"), "output_similarity"
        ),
    )


def _predictions(
    body: Mapping[str, Any], section: str, axes: Mapping[str, list[str]], shapes: Mapping[str, list[int]]
) -> Predictions | None:
    """`predictions` or `predictions_clean`, its arrays checked against meta's `{section}.{name}` axes."""
    part = body.get(section)
    if part is None:
        return None

    def array(name: str) -> FloatArray | None:
        key = f"{section}.{name}"
        return None if part.get(name) is None else _array(part[name], axes[key], shapes.get(key), key)

    top_probs = array("top_probs")
    if top_probs is None or not isinstance(part.get("top_tokens"), list):
        raise ResponseError(f"found `{section}` without top_tokens and top_probs: {str(part)[:100]}")
    return Predictions(part["top_tokens"], top_probs, array("target_logprobs"), array("kl"))


def _kv_head_of(meta: Meta) -> list[int]:
    """Grouped-query attention's map from query head to kv head, checked against the sizes of its axes."""
    kv_head_of = meta.get("kv_head_of")
    num_heads, num_kv_heads = meta.get("num_heads"), meta.get("num_kv_heads")
    if not (
        isinstance(kv_head_of, list)
        and len(kv_head_of) == num_heads
        and isinstance(num_kv_heads, int)
        and all(isinstance(g, int) and 0 <= g < num_kv_heads for g in kv_head_of)
    ):
        raise ResponseError(
            f"found meta.kv_head_of {str(kv_head_of)[:100]}; expected, with a `kv_head` axis, the kv head of "
            f"each of the {num_heads} query heads, each from 0 to {num_kv_heads} (num_kv_heads) - 1"
        )
    return kv_head_of


def _axes(axes: Mapping[str, list[str]]) -> dict[str, tuple[str, ...]]:
    return {name: tuple(names) for name, names in axes.items()}


def _array(value: Any, axes: list[str], shape: list[int] | None, name: str) -> FloatArray:
    """float64 (JSON's numbers exactly as written), int64 for the integer tensors (key positions); null is a
    masked entry: -inf."""
    integers = name.rsplit(".", 1)[-1] in INTEGER_TENSORS
    try:
        array: Any = np.array(value, dtype=np.int64 if integers else np.float64)
    except (ValueError, TypeError) as error:
        raise ResponseError(f"{name}: found no rectangular array of numbers ({error})") from None
    if array.ndim != len(axes) or (shape is not None and list(array.shape) != list(shape)):
        raise ResponseError(
            f"{name}: found shape {list(array.shape)}; expected axes {axes}"
            + (f" of shape {list(shape)} (meta.shapes)" if shape is not None else "")
        )
    if not integers:
        array[np.isnan(array)] = -np.inf
    return cast(FloatArray, array)  # top_keys as int64: Tensors.top_keys types it


DECODERS: dict[str, Callable[[bytes, str | None], Attention]] = {JSON: from_json}
