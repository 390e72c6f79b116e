"""`meta` of a response: the sizes, the settings in force, the axes and shapes of each returned tensor."""

from __future__ import annotations

import functools
import time
import typing
from typing import Any

import orjson
import torch

from schemas.axes import TensorName, tensor_axes
from schemas.request import AttendRequest
from schemas.response import Meta
from service.compute.device import device_name
from service.compute.sizes import Sizes
from service.compute.slicing import EVERYTHING, Selection


def weight_settings(request: AttendRequest, direct: bool) -> dict[str, Any]:
    """Where the weights of the explicit and toy path came from: weights_source, layout, init, seed."""
    spec = request.weights
    if direct:
        return {"weights_source": "none", "layout": None, "init": None, "seed": None}
    if spec is not None and spec.explicit:
        return {"weights_source": "explicit", "layout": spec.layout, "init": None, "seed": None}
    return {
        "weights_source": "generated",
        "layout": None,
        "init": spec.init if spec else "xavier_uniform",
        "seed": spec.seed if spec else 0,
    }


def kv_head_of(sizes: Sizes) -> list[int]:
    """For each query head, the key/value head it reads (repeat_kv's order: consecutive query heads share)."""
    group = sizes.num_heads // sizes.num_kv_heads
    return [head // group for head in range(sizes.num_heads)]


def summary_meta(request: AttendRequest, sizes: Sizes) -> dict[str, Any]:
    """The summaries' settings and axis lengths, when the request asks for summaries."""
    if not request.summaries:
        return {}
    return {
        "top_k": sizes.top_k,
        "pool": sizes.pool,
        "rank": sizes.rank,
        "query_blocks": sizes.query_blocks,
        "key_blocks": sizes.key_blocks,
        "blocked": request.blocked,
    }


def returned_shapes(
    request: AttendRequest,
    sizes: Sizes,
    selection: Selection = EVERYTHING,
    sections: dict[str, list[int]] | None = None,
) -> dict[str, list[int]]:
    """meta.shapes: each returned tensor's shape as returned, then those of a model's top-level `sections`;
    without building the rest of meta (a batched pass cuts each request's share to them: batching.py)."""
    return {name: list(selection.shape(sizes, name)) for name in request.returned} | (sections or {})


@functools.lru_cache(maxsize=256)
def _returned_axes(returned: tuple[TensorName, ...], grouped: bool) -> dict[str, list[str]]:
    """meta.axes of the returned tensors: the same for every request that returns them (found once; callers
    copy it, `|`, and never change it)."""
    return {name: list(tensor_axes(name, grouped)) for name in returned}


def build_meta(
    request: AttendRequest,
    sizes: Sizes,
    scale: float,
    device: torch.device,
    started: float,
    selection: Selection = EVERYTHING,
    **about: Any,
) -> bytes:
    """meta as JSON; `about` holds what depends on the input path (weight settings, model, layers, lengths,
    masked, output_projection; a model's causality, window, cap and positions; the axes and shapes of a
    model's top-level sections) and on the format (wire_dtype).
    elapsed_ms counts from `started` to now."""
    returned: tuple[TensorName, ...] = request.returned
    return meta_json(
        device=device_name(device),
        dtype=request.dtype,
        scale=scale,
        num_heads=sizes.num_heads,
        num_kv_heads=sizes.num_kv_heads,
        kv_head_of=kv_head_of(sizes) if sizes.grouped else None,
        d_k=sizes.d_k,
        d_v=sizes.d_v,
        d_model=sizes.d_model,
        d_out=sizes.d_out,
        batch=sizes.batch,
        seq=sizes.seq,
        seq_kv=sizes.seq_kv,
        causal=about.pop("causal", request.causal),
        torch_version=torch.__version__,
        decimals=request.decimals,
        axes=_returned_axes(returned, sizes.grouped) | about.pop("axes", {}),
        shapes=returned_shapes(request, sizes, selection, about.pop("shapes", None)),
        **selection.about(),
        elapsed_ms=round((time.perf_counter() - started) * 1000, 3),
        **summary_meta(request, sizes),
        **about,
    )


def _is_float(annotation: Any) -> bool:
    return annotation is float or float in typing.get_args(annotation)


# Meta's members in the schema's order, the defaults of those a computation may leave out, and the floats
_MEMBERS = Meta.model_fields
_DEFAULTS = {name: field.default for name, field in _MEMBERS.items() if not field.is_required()}
_REQUIRED = frozenset(_MEMBERS) - frozenset(_DEFAULTS)
_FLOATS = tuple(name for name, field in _MEMBERS.items() if _is_float(field.annotation))


def meta_json(**values: Any) -> bytes:
    """Meta(**values) as pydantic writes it (schemas/response.py), by one orjson call rather than a
    validation of its 40-odd fields (issue 26: a third of a small request's encoding): its members in the
    schema's order, the defaults of those left out, a float field written as a float (a scale of 1 as
    1.0). The values are the computation's own, of the schema's types; a name the schema does not have, or a
    required one missing, is a bug (TypeError)."""
    unknown, missing = values.keys() - _MEMBERS.keys(), _REQUIRED - values.keys()
    if unknown or missing:
        raise TypeError(f"meta: unknown {sorted(unknown)}, missing {sorted(missing)}")
    members = {name: values[name] if name in values else _DEFAULTS[name] for name in _MEMBERS}
    for name in _FLOATS:
        if members[name] is not None:
            members[name] = float(members[name])
    return orjson.dumps(members, option=orjson.OPT_SERIALIZE_NUMPY)  # numpy ints as pydantic took them
