"""Tensors to JSON bytes, straight from their memory (orjson reads numpy arrays in C).

Non-finite values (-inf at masked scores, overflow in half precision) become null, since JSON has no inf.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import orjson
import torch

from service.compute.device import NUMPY_DTYPES

PIECE_NUMBERS = 2**16  # numbers written by one orjson call: a piece of JSON of at most about 1 MB


def host_arrays(tensors: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """numpy views of CPU float32/float64 tensors (no copy, no torch call); otherwise
    all tensors packed into one buffer and moved to host memory in one copy, float16/bfloat16 widened to
    float32 exactly (numpy has no bfloat16, orjson no float16). Integer tensors (key positions) move on
    their own, as integers."""
    views: dict[str, np.ndarray] = {}
    for name, tensor in tensors.items():  # one pass, as long as every tensor is a CPU float32/float64 one
        if not tensor.is_cpu or tensor.dtype not in NUMPY_DTYPES:
            break
        views[name] = tensor.numpy()
    else:
        return views
    integers = {name: t for name, t in tensors.items() if not t.is_floating_point()}
    if integers:
        floats = host_arrays({name: t for name, t in tensors.items() if name not in integers})
        moved = {name: t.cpu().numpy() for name, t in integers.items()}
        return {name: floats[name] if name in floats else moved[name] for name in tensors}
    flat = torch.cat([tensor.reshape(-1) for tensor in tensors.values()])  # [total]
    buffer = flat.to(device="cpu", dtype=flat.dtype if flat.dtype in NUMPY_DTYPES else torch.float32).numpy()
    arrays, offset = {}, 0
    for name, tensor in tensors.items():
        arrays[name] = buffer[offset : offset + tensor.numel()].reshape(tensor.shape)
        offset += tensor.numel()
    return arrays


def rounded(array: np.ndarray, decimals: int) -> np.ndarray:
    """np.round to `decimals` places without ever changing a value's magnitude: np.round multiplies by
    10**decimals in the array's dtype, which overflows for large values, so values at or over the magnitude
    from which the dtype's spacing exceeds 10**-decimals (rounding cannot change them) pass through as they
    are, and so do non-finite values and integers."""
    if array.dtype.kind != "f":
        return array
    # |x| * 10**decimals >= 2**(nmant + 1) means ulp(x) > 10**-decimals; below it the product is finite
    bound = 2.0 ** (np.finfo(array.dtype).nmant + 1) / 10.0**decimals
    if array.size == 0 or np.abs(array).max() < bound:  # the usual case: one pass, then numpy's rounding
        return np.round(array, decimals)
    small = np.abs(array) < bound  # False for inf and nan
    return np.where(small, np.round(np.where(small, array, 0), decimals), array)


def _host(value: Any, decimals: int | None) -> Any:
    """Tensors inside dicts and lists as contiguous numpy arrays (rounded if asked); the rest as is. The
    tensors of one dict (the top level, or one layer) move to host memory together."""
    if isinstance(value, list):
        return [_host(item, decimals) for item in value]
    if not isinstance(value, dict):
        return value
    tensors = {key: item for key, item in value.items() if isinstance(item, torch.Tensor)}
    arrays = host_arrays(tensors) if tensors else {}
    if decimals is not None:
        arrays = {key: rounded(array, decimals) for key, array in arrays.items()}
    return {
        key: np.ascontiguousarray(arrays[key]) if key in arrays else _host(item, decimals)
        for key, item in value.items()
    }


def encode_object(sections: dict[str, Any], decimals: int | None) -> bytes:
    """`sections` (tensors, lists of per-layer dicts of tensors, tokens, plain values) as one JSON object."""
    return orjson.dumps(_host(sections, decimals), option=orjson.OPT_SERIALIZE_NUMPY)


def encode_pieces(
    sections: dict[str, Any], decimals: int | None, meta: Callable[[], bytes]
) -> Iterator[bytes | memoryview]:
    """The response object, `sections` (tensors, lists of per-layer dicts of tensors, tokens) then `meta()`,
    in pieces of at most about a megabyte, each written when it is asked for: together the bytes orjson
    writes for the whole object (encode_object), but never held whole, nor twice (148 MB at 16k tokens with
    every summary of every layer). `sections` and its lists are emptied as they are written, so that each
    layer's tensors are freed once its JSON is out. `meta()` is called once the tensors are written (which
    also waits for a GPU to finish), so that it can time them."""
    written = bool(sections)
    if _small(sections):  # one orjson call rather than two per member (issue 26: small requests)
        whole = encode_object(sections, decimals)
        sections.clear()
        yield whole[:-1] + (b"," if written else b"") + b'"meta":' + meta() + b"}"
        return
    yield b"{"
    yield from _members(sections, decimals)
    yield (b"," if written else b"") + b'"meta":' + meta() + b"}"


def _small(sections: dict[str, Any]) -> bool:
    """An object written in one piece: no layers nor nested sections (which are written, and freed, one at
    a time), and at most PIECE_NUMBERS numbers in its tensors."""
    numbers = 0
    for value in sections.values():
        if isinstance(value, torch.Tensor):
            numbers += value.numel()
        elif isinstance(value, dict) or (isinstance(value, list) and any(isinstance(v, dict) for v in value)):
            return False
    return numbers <= PIECE_NUMBERS


def _members(value: dict[str, Any], decimals: int | None) -> Iterator[bytes | memoryview]:
    """The members of an object, comma-separated, each popped from `value` as it is written; its tensors
    moved to host memory together (as _host does), each written by pieces of its rows."""
    tensors = {key: item for key, item in value.items() if isinstance(item, torch.Tensor)}
    arrays = _host(tensors, decimals) if tensors else {}
    del tensors
    for number, key in enumerate(list(value)):
        item = value.pop(key)
        yield (b"," if number else b"") + orjson.dumps(key) + b":"
        yield from _array_pieces(arrays.pop(key)) if key in arrays else _value_pieces(item, decimals)
        del item


def _value_pieces(value: Any, decimals: int | None) -> Iterator[bytes | memoryview]:
    """A value of the response object in pieces: a list of dicts (`layers`, each item dropped from the list
    once written), a dict (one layer: _members), anything else in one piece."""
    if isinstance(value, list) and any(isinstance(item, dict) for item in value):
        yield b"["
        for index in range(len(value)):
            item, value[index] = value[index], None  # the list holds it no longer once it is written
            if index:
                yield b","
            yield from _value_pieces(item, decimals)
            del item
        yield b"]"
    elif isinstance(value, dict):
        yield b"{"
        yield from _members(value, decimals)
        yield b"}"
    else:
        yield orjson.dumps(_host(value, decimals), option=orjson.OPT_SERIALIZE_NUMPY)


def _array_pieces(array: np.ndarray) -> Iterator[bytes | memoryview]:
    """A contiguous array as orjson writes it, in pieces of at most PIECE_NUMBERS numbers: runs of its rows
    (each run written as an array, its brackets dropped: orjson writes the rows of [[a],[b]] as it writes
    [a] and [b]), a row larger than that in pieces of its own."""
    if array.ndim == 0 or array.size <= PIECE_NUMBERS:
        yield orjson.dumps(array, option=orjson.OPT_SERIALIZE_NUMPY)
        return
    row_numbers = array.size // array.shape[0]
    yield b"["
    if row_numbers > PIECE_NUMBERS:
        for index in range(array.shape[0]):
            if index:
                yield b","
            yield from _array_pieces(array[index])
    else:
        rows = PIECE_NUMBERS // row_numbers
        for start in range(0, array.shape[0], rows):
            if start:
                yield b","
            yield memoryview(orjson.dumps(array[start : start + rows], option=orjson.OPT_SERIALIZE_NUMPY))[
                1:-1
            ]
    yield b"]"
