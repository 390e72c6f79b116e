"""The explicit and toy path: embeddings (with an optional context), Q/K/V given directly, or toy-mode text;
with explicit or generated weights. Inputs, then sizes and limits, then weights, attention, encoding."""

from __future__ import annotations

import math
from functools import partial

import numpy as np
import torch
from torch import Tensor

from schemas.axes import FLOW_TENSOR_NAMES, ROTARY_TENSOR_NAMES, TensorName
from schemas.request import TOY_D_MODEL, TOY_MODEL, AttendRequest
from service.compute.attention import AttentionInternals, attention_on
from service.compute.blocked import BlockedInternals
from service.compute.device import Converter, check_range
from service.compute.formats.result import Result
from service.compute.formats.wire import wire_dtype_of
from service.compute.inputs import Inputs, resolve_inputs
from service.compute.limits import check_batch, check_limits, check_sequence_sizes
from service.compute.meta import build_meta, weight_settings
from service.compute.sizes import Sizes
from service.compute.slicing import Selection
from service.compute.summarized import (
    asked_summaries,
    blocked_on,
    check_token_scores,
    reduce_whole,
    summary_sizes,
    token_ids_of,
    visibility,
)
from service.compute.toy import padded_tokens, toy_extent, toy_inputs, toy_token_count, toy_tokens
from service.compute.weights import BIASES, MATRICES, resolve_sizes, resolve_weights
from service.errors import LimitExceeded, RequestError
from service.settings import Settings


def _toy(request: AttendRequest, settings: Settings) -> tuple[Inputs, Sizes, Selection, list[list[str]]]:
    """Toy text: the batch, then the token counts (found without building the tokens), then the sizes, all
    checked before any text is tokenized or any embedding is built."""
    d_model = request.d_model or TOY_D_MODEL
    if d_model > settings.toy_max_d_model:
        raise LimitExceeded("ATTENTION_TOY_MAX_D_MODEL", settings.toy_max_d_model, d_model, "toy d_model")
    texts = request.texts
    check_batch(settings, len(texts))
    lengths = [toy_token_count(text, settings.longest_sequence(request.blocked)) for text in texts]
    check_sequence_sizes(settings, len(texts), max(lengths), request.blocked)
    sizes = summary_sizes(resolve_sizes(request, toy_extent(lengths, d_model)), request)
    selection = Selection.of(request, sizes)
    check_limits(settings, sizes, request.returned, selection, blocked=request.blocked)
    tokens = [toy_tokens(text) for text in texts]
    seed = request.weights.seed if request.weights is not None else 0
    return toy_inputs(tokens, d_model, seed), sizes, selection, tokens


def _numbers(request: AttendRequest) -> list[tuple[tuple[str, ...], np.ndarray | float | None]]:
    """Every number of the request that enters the computation, with its field's location."""
    spec = request.weights
    return [
        *(((name,), getattr(request, name)) for name in ("embeddings", "context", "query", "key", "value")),
        *((("weights", name), getattr(spec, name)) for name in (*MATRICES, *BIASES) if spec is not None),
        (("scale",), request.scale),
    ]


def attend_explicit(request: AttendRequest, settings: Settings, started: float) -> Result:
    rotary = [name for name in ROTARY_TENSOR_NAMES if name in request.returned]
    if rotary:
        raise RequestError(
            ("include",),
            f"found {', '.join(rotary)}; only a pretrained model with rotary positions rotates Q and K, so "
            "here q and k are the projections themselves (ask for q and k)",
        )
    check_token_scores(request, has_tokens=request.text is not None)
    flow = [name for name in FLOW_TENSOR_NAMES if name in request.returned]
    if flow:
        raise RequestError(
            ("include",),
            f"found {', '.join(flow)}; these follow attention across a model's layers, so they need a "
            "model's layers: `text` with a pretrained `model` (GET /models), not embeddings, Q/K/V or the "
            "toy model",
        )
    tokens = None
    if request.text is not None:
        inputs, sizes, selection, tokens = _toy(request, settings)
    else:
        inputs = resolve_inputs(request)
        sizes = summary_sizes(resolve_sizes(request, inputs.extent), request)
        selection = Selection.of(request, sizes)
        check_limits(settings, sizes, request.returned, selection, blocked=request.blocked)
    convert = Converter.for_request(request.device, request.dtype)
    check_range(convert.dtype, _numbers(request))
    projections = resolve_weights(request, sizes)
    scale = request.scale if request.scale is not None else 1.0 / math.sqrt(sizes.d_k)
    # the keys are the queries' own positions (self-attention): padded queries are left out of the summaries
    same_positions = not inputs.direct and request.context is None
    key_real = None if inputs.key_mask is None else torch.from_numpy(inputs.key_mask)
    query_real = key_real if same_positions else None
    token_ids = None if tokens is None else token_ids_of(tokens)
    asked = asked_summaries(request, sizes)
    computed: AttentionInternals | BlockedInternals
    if request.blocked:
        computed = blocked_on(
            convert,
            inputs.query_input,
            inputs.key_input,
            inputs.value_input,
            projections,
            sizes.num_heads,
            scale,
            asked,
            visibility(inputs.key_mask, request.causal, sizes.seq_kv, convert.device),
            query_real,
            key_real,
            token_ids,
        )
        tensor_of = computed.tensor
    else:
        computed = attention_on(
            convert,
            inputs.query_input,
            inputs.key_input,
            inputs.value_input,
            projections,
            sizes.num_heads,
            scale,
            request.causal,
            inputs.key_mask,
        )
        whole = computed
        summaries = reduce_whole(whole.weights, asked, query_real, key_real, token_ids) if asked.names else {}

        def tensor_of(name: TensorName) -> Tensor:
            return summaries[name] if name in summaries else getattr(whole, name)

    padded = inputs.key_mask is not None and not inputs.key_mask.all()
    about: dict[str, object] = {
        **weight_settings(request, inputs.direct),
        "output_projection": projections.w_o is not None,
        "masked": request.causal or padded,
    }
    if tokens is not None:
        about |= {"model": TOY_MODEL, "lengths": [len(t) for t in tokens], "padded": padded}
    return Result(
        tensors={name: selection.cut(name, tensor_of(name)) for name in request.returned},
        layers=None,
        order=None,
        tokens=None if tokens is None else padded_tokens(tokens),
        meta=partial(build_meta, request, sizes, scale, convert.device, started, selection, **about),
        decimals=request.decimals,
        wire_dtype=wire_dtype_of(request.wire_dtype, request.dtype),
    )
