"""Reading the binary and streamed formats back with third-party readers (safetensors, json), and the JSON
response's tensors in the same shape, so that tests compare every format with the JSON answer."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load

from schemas.axes import ALL_TENSOR_NAMES
from service.compute.encoding import encode_pieces

TENSORS = ALL_TENSOR_NAMES


def encoded(sections: dict[str, Any], decimals: int | None, meta: Callable[[], bytes]) -> bytes:
    """The JSON response object of `sections` whole, its pieces joined as formats/json_body.py joins them."""
    return b"".join(encode_pieces(sections, decimals, meta))


def json_arrays(response: dict[str, Any], dtype: Any = None) -> dict[str, np.ndarray]:
    """The tensors of a JSON response by their safetensors names (`q`, `layers.3.weights`), null as -inf,
    as `dtype` (default: the computation's, float16 and bfloat16 widened to float32 as JSON carries them)."""
    if dtype is None:
        dtype = np.float64 if response["meta"]["dtype"] == "float64" else np.float32

    def array(value: Any) -> np.ndarray:
        return np.array(json.loads(json.dumps(value).replace("null", "-Infinity")), dtype=dtype)

    arrays: dict[str, np.ndarray] = {name: array(response[name]) for name in TENSORS if name in response}
    for layer in response.get("layers") or []:
        arrays |= {f"layers.{layer['layer']}.{name}": array(layer[name]) for name in TENSORS if name in layer}
    return arrays


def read_safetensors(content: bytes) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The tensors (one safetensors.numpy.load call) and the file's __metadata__ (safe_open, from a file)."""
    tensors = load(content)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "response.safetensors"
        path.write_bytes(content)
        with safe_open(str(path), framework="numpy") as opened:
            metadata = opened.metadata()
    return tensors, metadata


def without_timing(meta: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in meta.items() if key not in ("elapsed_ms", "wire_dtype")}


def assert_same_arrays(found: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    """The same names, and for each the same shape, dtype and bits (-inf where masked)."""
    assert sorted(found) == sorted(expected)
    for name, array in expected.items():
        assert found[name].dtype == array.dtype, name
        assert found[name].shape == array.shape, name
        assert np.array_equal(found[name], array), name


def ndjson_response(lines: list[bytes]) -> dict[str, Any]:
    """The lines of a stream put together as the JSON response: tensors (or `layers`), tokens, meta."""
    first, *rest = (json.loads(line) for line in lines)
    assert set(first) == {"meta", "tokens"}
    response: dict[str, Any] = {}
    if rest and "layer" in rest[0]:
        response["layers"] = rest
    else:
        (tensors,) = rest
        response |= tensors
    if first["tokens"] is not None:
        response["tokens"] = first["tokens"]
    return response | {"meta": first["meta"]}
