"""The summaries of a request on either input path: its sizes, its checks, and the two ways to compute them
(in blocks of queries when no [query_pos, key_pos] tensor is asked for, else from the whole weights)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from jaxtyping import Bool, Int
from torch import Tensor

from schemas.axes import TOKEN_SCORE_NAMES, TensorName
from schemas.request import AttendRequest
from service.compute.attention import Projections, Rotary
from service.compute.blocked import BlockedInternals, RowMask, Visibility, attention_blocked
from service.compute.device import Converter
from service.compute.sizes import Sizes
from service.compute.summaries import SummaryReducer, SummaryRequest, default_pool
from service.errors import RequestError


def summary_sizes(sizes: Sizes, request: AttendRequest) -> Sizes:
    """`sizes` with the request's top_k and pool (the default pool for these lengths)."""
    pool = request.pool or default_pool(sizes.seq, sizes.seq_kv)
    return replace(sizes, top_k=request.top_k, pool=pool)


def asked_summaries(request: AttendRequest, sizes: Sizes) -> SummaryRequest:
    return SummaryRequest(request.summaries, sizes.top_k, sizes.pool)


def check_token_scores(request: AttendRequest, has_tokens: bool) -> None:
    """The duplicate-token and induction scores compare token ids: a 422 on `include` without text."""
    asked = [name for name in TOKEN_SCORE_NAMES if name in request.summaries]
    if asked and not has_tokens:
        raise RequestError(
            ("include",),
            f"found {', '.join(asked)}, which compare the token ids of queries and keys; embeddings and "
            "Q/K/V inputs have no tokens (send `text`, or ask for previous_token_score and sink_score)",
        )


def token_ids_of(tokens: list[list[str]]) -> Int[Tensor, "batch pos"]:
    """Toy tokens as ids: equal strings, equal ids (padded to the longest with -1, which no token has)."""
    ids: dict[str, int] = {}
    seq = max(len(row) for row in tokens)
    table = np.full((len(tokens), seq), -1, dtype=np.int64)
    for row, text_tokens in enumerate(tokens):
        table[row, : len(text_tokens)] = [ids.setdefault(token, len(ids)) for token in text_tokens]
    return torch.from_numpy(table)


def reduce_whole(
    weights: Tensor,
    asked: SummaryRequest,
    query_real: Bool[Tensor, "batch query_pos"] | None,
    key_real: Bool[Tensor, "batch key_pos"] | None,
    token_ids: Int[Tensor, "batch pos"] | None,
) -> dict[TensorName, Tensor]:
    """The summaries of whole weights [batch, head, query_pos, key_pos], as one block."""
    batch, heads, seq, seq_kv = weights.shape
    reducer = SummaryReducer(asked, batch, heads, seq, seq_kv, weights, query_real, key_real, token_ids)
    reducer.add(0, weights)
    return reducer.finish()


def blocked_on(
    convert: Converter,
    query_input: np.ndarray | Tensor,
    key_input: np.ndarray | Tensor,
    value_input: np.ndarray | Tensor,
    projections: Projections,
    num_heads: int,
    scale: float,
    asked: SummaryRequest,
    mask: RowMask,
    query_real: Bool[Tensor, "batch query_pos"] | None,
    key_real: Bool[Tensor, "batch key_pos"] | None,
    token_ids: Int[Tensor, "batch pos"] | None = None,
    *,
    num_kv_heads: int | None = None,
    rotary: Rotary | None = None,
    softcap: float | None = None,
    pre_rotary: bool = False,
    where: str = "",
) -> BlockedInternals:
    """attention_blocked on `convert`'s device and in its dtype (service/compute/attention.py's attention_on
    for the blocked computation); an input given twice is moved once."""
    moved: dict[int, Tensor] = {}

    def on_device(array: np.ndarray | Tensor) -> Tensor:
        if id(array) not in moved:
            moved[id(array)] = convert(array)
        return moved[id(array)]

    def reducer(q: Tensor) -> SummaryReducer:
        batch, heads, seq, _ = q.shape
        seq_kv = key_input.shape[1]
        return SummaryReducer(asked, batch, heads, seq, seq_kv, q, query_real, key_real, token_ids)

    with torch.inference_mode():
        return attention_blocked(
            on_device(query_input),
            on_device(key_input),
            on_device(value_input),
            projections.to(convert),
            num_heads,
            scale,
            mask,
            reducer,
            num_kv_heads=num_kv_heads,
            rotary=None if rotary is None else rotary.to(convert),
            softcap=softcap,
            pre_rotary=pre_rotary,
            where=where,
        )


def visibility(
    key_mask: np.ndarray | Tensor | None, causal: bool, seq_kv: int, device: torch.device
) -> Visibility:
    """The explicit path's mask of a blocked computation: padding over the keys and causality."""
    mask = None if key_mask is None else torch.as_tensor(key_mask).to(device)
    return Visibility(mask, causal, seq_kv)
