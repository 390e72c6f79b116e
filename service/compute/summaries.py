"""Summaries of each head's weights (the `include` names of schemas.axes.SUMMARY_NAMES), reduced a block of
query rows at a time, so that no whole [query_pos, key_pos] matrix is ever needed (service/compute/blocked.py
feeds the blocks; a request that computed whole weights feeds them as one block).

Padding is left out of every sum and mean over queries: a padded query's row is not counted (padded keys
have weight 0 already). The three head scores are TransformerLens' detect_head with error_measure="mul",
exclude_bos=False, exclude_current_token=False, per text: sum(w * pattern) / sum(w) over the real queries.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor

from schemas.axes import SUMMARY_NAMES, TOKEN_SCORE_NAMES, TensorName

MAX_POOLED_BLOCKS = 128  # the default pool gives at most this many blocks per axis
HEAD_SCORES: tuple[TensorName, ...] = ("previous_token_score", *TOKEN_SCORE_NAMES)


def default_pool(seq: int, seq_kv: int) -> int:
    """The smallest pool that gives at most MAX_POOLED_BLOCKS blocks on each position axis."""
    return max(1, -(-max(seq, seq_kv) // MAX_POOLED_BLOCKS))


@dataclass(frozen=True)
class SummaryRequest:
    """What to reduce: the summary names asked for (in SUMMARY_NAMES order), `top_k` and `pool`."""

    names: tuple[TensorName, ...]
    top_k: int
    pool: int

    @property
    def wants_tokens(self) -> bool:
        return any(name in TOKEN_SCORE_NAMES for name in self.names)


def _weight_on(
    counted: Float[Tensor, "batch head rows width"], pattern: Bool[Tensor, "batch rows width"]
) -> Float[Tensor, "batch head"]:
    """sum over rows and keys of counted * pattern, for each head: one matrix-vector product per text."""
    batch, heads = counted.shape[:2]
    flat = counted.reshape(batch, heads, -1)  # [batch, head, rows*width]
    return (flat @ pattern.reshape(batch, -1, 1).to(counted.dtype))[..., 0]


def top_keys_of(
    weights: Float[Tensor, "*rows key_pos"], rank: int
) -> tuple[Int[Tensor, "*rows rank"], Float[Tensor, "*rows rank"]]:
    """The positions of the `rank` largest weights of each row, largest first, ties to the lower position
    (torch.topk leaves the order of equal values open), and those weights. When no weight outside torch's
    pick equals the rank-th largest, its pick is right and only its order is fixed; otherwise every weight
    above the rank-th largest is taken, then the lowest positions holding exactly it, until the row has
    `rank`."""
    values, positions = weights.topk(rank, dim=-1, sorted=True)
    threshold = values[..., -1:]  # [*rows, 1]
    if bool(((weights >= threshold).sum(-1) == rank).all()):  # the pick is the only one possible
        by_position = positions.sort(dim=-1).indices  # equal weights in position order, then by weight
        positions, values = positions.gather(-1, by_position), values.gather(-1, by_position)
        order = values.sort(dim=-1, descending=True, stable=True).indices
        return positions.gather(-1, order), values.gather(-1, order)
    above = weights > threshold
    level = weights == threshold
    room = rank - above.sum(-1, keepdim=True, dtype=torch.int32)  # [*rows, 1]
    chosen = above | (level & (level.cumsum(-1, dtype=torch.int32) <= room))  # exactly `rank` per row
    positions = chosen.nonzero()[:, -1].view(*weights.shape[:-1], rank)  # ascending in each row
    picked = weights.gather(-1, positions)
    order = picked.sort(dim=-1, descending=True, stable=True).indices  # equal weights keep position order
    return positions.gather(-1, order), picked.gather(-1, order)


class SummaryReducer:
    """Takes the weights of every head a block of query rows at a time (`add`, blocks in any order, each row
    once) and gives the summaries asked for (`finish`), in the weights' dtype (sums are accumulated in at
    least float32), top_keys as int64.

    `query_real`: the queries that count in sums and means over queries (None: all); `key_real`: the keys
    that count in pooled means (None: all); `token_ids`: each position's token (self-attention over a text),
    needed by the duplicate-token and induction scores."""

    def __init__(
        self,
        asked: SummaryRequest,
        batch: int,
        heads: int,
        seq: int,
        seq_kv: int,
        like: Tensor,
        query_real: Bool[Tensor, "batch query_pos"] | None = None,
        key_real: Bool[Tensor, "batch key_pos"] | None = None,
        token_ids: Int[Tensor, "batch pos"] | None = None,
    ):
        self.asked, self.seq, self.seq_kv = asked, seq, seq_kv
        self.dtype, device = like.dtype, like.device
        self.sum_dtype = torch.promote_types(like.dtype, torch.float32)
        self.rank = min(asked.top_k, seq_kv)
        names = set(asked.names)
        self.names = names
        self.query_real = (
            torch.ones(batch, seq, dtype=torch.bool, device=device)
            if query_real is None
            else query_real.to(device)
        )
        self.key_real = (
            torch.ones(batch, seq_kv, dtype=torch.bool, device=device)
            if key_real is None
            else key_real.to(device)
        )
        self.token_ids = None if token_ids is None else token_ids.to(device)

        def zeros(*shape: int, dtype: torch.dtype | None = None) -> Tensor:
            return torch.zeros(*shape, dtype=dtype or self.sum_dtype, device=device)

        self.entropy = zeros(batch, heads, seq, dtype=like.dtype) if "entropy" in names else None
        wants_top = bool(names & {"top_keys", "top_weights"})
        self.top_keys = zeros(batch, heads, seq, self.rank, dtype=torch.int64) if wants_top else None
        self.top_weights = zeros(batch, heads, seq, self.rank, dtype=like.dtype) if wants_top else None
        self.received = zeros(batch, heads, seq_kv) if "received" in names else None
        pool = asked.pool
        self.query_blocks, self.key_blocks = -(-seq // pool), -(-seq_kv // pool)
        pooled = "pooled_weights" in names
        self.pooled = zeros(batch, heads, self.query_blocks, self.key_blocks) if pooled else None
        self.matched = {name: zeros(batch, heads) for name in HEAD_SCORES if name in names}
        self.total = zeros(batch, heads) if self.matched else None  # sum(w) over the real queries
        self.sink = zeros(batch, heads) if "sink_score" in names else None

    def add(self, start: int, weights: Float[Tensor, "batch head rows width"]) -> None:
        """The weights of query rows start .. start + rows over the first `width` keys (every key after them
        has weight 0 in these rows: a causal block's later keys)."""
        rows, width = weights.shape[2], weights.shape[3]
        stop = start + rows
        if self.entropy is not None:
            self.entropy[:, :, start:stop] = torch.special.entr(weights).sum(-1)
        if self.top_keys is not None and self.top_weights is not None:
            reach = min(self.seq_kv, max(width, self.rank))  # a row fills its ranks with later keys, weight 0
            widened = weights if reach == width else F.pad(weights, (0, reach - width))
            keys, top = top_keys_of(widened, self.rank)
            self.top_keys[:, :, start:stop] = keys
            self.top_weights[:, :, start:stop] = top
        needs_real_rows = (
            self.received is not None
            or self.pooled is not None
            or self.total is not None
            or self.sink is not None
        )
        if not needs_real_rows:
            return
        real_rows = self.query_real[:, None, start:stop, None]  # [batch, 1, rows, 1]
        counted = weights.to(self.sum_dtype)
        if not bool(real_rows.all()):
            counted = counted.masked_fill(~real_rows, 0.0)  # [batch, head, rows, width]
        if self.received is not None:
            self.received[..., :width] += counted.sum(2)
        if self.pooled is not None:
            self._pool(start, counted)
        if self.sink is not None:
            self.sink += counted[..., 0].sum(-1)
        if self.total is not None:
            self.total += counted.sum((2, 3))
            self._match(start, counted)

    def _pool(self, start: int, counted: Float[Tensor, "batch head rows width"]) -> None:
        """Each row's sums over key blocks (the row padded with zeros to a whole block), added to its query
        block's."""
        assert self.pooled is not None
        pool, (batch, heads, rows, width) = self.asked.pool, counted.shape
        whole, blocks = width // pool, -(-width // pool)
        by_key_block = counted.new_zeros(batch, heads, rows, blocks)  # [batch, head, rows, blocks]
        by_key_block[..., :whole] = (
            counted[..., : whole * pool].reshape(batch, heads, rows, whole, pool).sum(-1)
        )
        if blocks > whole:  # the last block, shorter
            by_key_block[..., whole] = counted[..., whole * pool :].sum(-1)
        query_block = torch.arange(start, start + rows, device=counted.device) // pool
        self.pooled[..., :blocks].index_add_(2, query_block, by_key_block)

    def _match(self, start: int, counted: Float[Tensor, "batch head rows width"]) -> None:
        """The weight on each head score's detection pattern (TransformerLens' get_*_detection_pattern):
        previous token j = i - 1; duplicate token j < i with the token of i; induction j <= i with the token
        of i at j - 1."""
        rows, width, device = counted.shape[2], counted.shape[3], counted.device
        query = torch.arange(start, start + rows, device=device)  # [rows]
        if "previous_token_score" in self.matched:
            previous = query - 1
            inside = (previous >= 0) & (previous < width)
            at = previous.clamp(0, width - 1)[None, None, :, None].expand(*counted.shape[:3], 1)
            on_previous = counted.gather(-1, at)[..., 0].masked_fill(~inside, 0.0)  # [batch, head, rows]
            self.matched["previous_token_score"] += on_previous.sum(-1)
        if self.token_ids is None:
            return
        key = torch.arange(width, device=device)  # [width]
        ids = self.token_ids
        token = ids[:, start : start + rows, None]  # [batch, rows, 1]
        if "duplicate_token_score" in self.matched:
            pattern = (token == ids[:, None, :width]) & (
                key[None, :] < query[:, None]
            )  # [batch, rows, width]
            self.matched["duplicate_token_score"] += _weight_on(counted, pattern)
        if "induction_score" in self.matched:
            before = torch.cat(
                [torch.full_like(ids[:, :1], -1), ids[:, : width - 1]], dim=1
            )  # token at j - 1
            pattern = (token == before[:, None, :]) & (key[None, :] <= query[:, None])
            self.matched["induction_score"] += _weight_on(counted, pattern)

    def finish(self) -> dict[TensorName, Tensor]:
        """The summaries asked for, by name in SUMMARY_NAMES order."""
        found: dict[TensorName, Tensor] = {}
        if self.entropy is not None:
            found["entropy"] = self.entropy
        if self.top_keys is not None and self.top_weights is not None:
            found["top_keys"], found["top_weights"] = self.top_keys, self.top_weights
        if self.received is not None:
            found["received"] = self.received
        if self.pooled is not None:
            found["pooled_weights"] = self.pooled / self._pairs().clamp(min=1)
        if self.total is not None:
            for name, matched in self.matched.items():
                found[name] = torch.where(self.total > 0, matched / self.total.clamp(min=1e-30), 0.0)
        if self.sink is not None:
            real = self.query_real.sum(-1, keepdim=True).to(self.sum_dtype)  # [batch, 1]
            found["sink_score"] = self.sink / real.clamp(min=1)
        return {
            name: tensor if name == "top_keys" else tensor.to(self.dtype)
            for name in SUMMARY_NAMES
            if name in self.names and (tensor := found[name]) is not None
        }

    def _pairs(self) -> Float[Tensor, "batch 1 query_block key_block"]:
        """The real query-key pairs of each pooled block."""
        pool = self.asked.pool

        def per_block(real: Tensor, blocks: int) -> Tensor:
            block = torch.arange(real.shape[1], device=real.device) // pool
            counts = torch.zeros(real.shape[0], blocks, dtype=self.sum_dtype, device=real.device)
            return counts.index_add_(1, block, real.to(self.sum_dtype))  # [batch, blocks]

        queries = per_block(self.query_real, self.query_blocks)
        keys = per_block(self.key_real, self.key_blocks)
        return (queries[:, :, None] * keys[:, None, :])[:, None]
