"""Summaries of each head's weights (the `include` names of schemas.axes.SUMMARY_NAMES), reduced a block of
query rows at a time, so that no whole [query_pos, key_pos] matrix is ever needed (service/compute/blocked.py
feeds the blocks; a request that computed whole weights feeds them as one block).

Padding is left out of every sum and mean over queries: a padded query's row is not counted (padded keys
have weight 0 already). The three head scores are TransformerLens' detect_head with error_measure="mul",
exclude_bos=False, exclude_current_token=False, per text: sum(w * pattern) / sum(w) over the real queries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor

from schemas.axes import SUMMARY_NAMES, TOKEN_SCORE_NAMES, TensorName
from service.compute.token_pairs import TokenPairs

MAX_POOLED_BLOCKS = 128  # the default pool gives at most this many blocks per axis
TOP_WIDE_CHUNK = 256  # keys per chunk of a wide row whose maxima first narrow the search for its top keys
TOP_CHUNKS = (64, 8)  # keys per chunk of each narrowing of a row's search for its top keys after the first
# the keys that wide rows' search keeps, of blocks waiting for the rest of it (_TopSearch): one block's scores
TOP_PENDING_ELEMENTS = 1 << 20
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


def top_keys_of(
    weights: Float[Tensor, "*rows key_pos"], rank: int
) -> tuple[Int[Tensor, "*rows rank"], Float[Tensor, "*rows rank"]]:
    """The positions of the `rank` largest weights of each row, largest first, ties to the lower position,
    and those weights. A wide row is first narrowed to its `rank` chunks of TOP_WIDE_CHUNK keys with the
    largest maxima (wide_chunks), then searched as top_keys_in_chunks does: one reduction over the row and
    small selections instead of a selection over the row (torch.topk on a CPU costs 5-9 ns per key of real
    data, a pass of amax a tenth of that)."""
    wide = wide_chunks(weights, rank)
    if wide is None:
        return top_keys_in_chunks(weights, rank)
    keys, top = top_keys_in_chunks(wide.kept, rank)
    return wide.positions(keys), top


def top_keys_in_chunks(
    weights: Float[Tensor, "*rows key_pos"], rank: int
) -> tuple[Int[Tensor, "*rows rank"], Float[Tensor, "*rows rank"]]:
    """top_keys_of, a row narrowed in turn by each chunk size of TOP_CHUNKS that leaves at most a quarter of
    it, to the keys of its `rank` chunks with the largest maxima: exact when every chunk left out has its
    maximum below the rank-th largest weight found, else (a tie across chunks, nan) the whole rows are
    searched. One look from the host per call: whether the chunks held the answer, and whether torch's
    pick among them needs no reordering (no weight ties with another in it or at its edge)."""
    levels: list[Chunks] = []
    kept = weights
    for size in TOP_CHUNKS:
        if rank * size * 4 <= kept.shape[-1]:
            levels.append(_chunks_kept(kept, rank, size))
            kept = levels[-1].kept
    if not levels:  # too narrow for the chunks to save work
        return top_keys_in_rows(weights, rank)
    values, at = kept.topk(rank + 1, dim=-1, sorted=True)  # the pick and the next weight after it
    left_out = torch.stack([level.best[..., rank] for level in levels]).amax(0)  # the largest chunk left out
    held, plain = torch.stack(
        [
            (left_out < values[..., rank - 1]).all(),  # every chunk left out below the rank-th
            (values[..., :-1] > values[..., 1:]).all(),  # distinct, and no other weight equals the rank-th
        ]
    ).tolist()
    if not held:
        return top_keys_in_rows(weights, rank)
    if plain:
        keys, top = at[..., :rank], values[..., :rank]
    else:
        keys, top = top_keys_in_rows(kept, rank)
    for level in reversed(levels):
        keys = level.positions(keys)
    return keys, top


class Chunks(NamedTuple):
    """A row's `rank` chunks of `size` keys with the largest maxima: `kept`, their keys in position order,
    then the row's keys from `tail` on (after its last whole chunk); `first`, the chunks (ascending);
    `best`, the rank + 1 largest chunk maxima, largest first."""

    kept: Float[Tensor, "*rows kept"]
    first: Int[Tensor, "*rows rank"]
    size: int
    tail: int
    best: Float[Tensor, "*rows rank_1"]

    def positions(self, at: Int[Tensor, "*rows count"]) -> Int[Tensor, "*rows count"]:
        """The positions in the row of the kept keys `at`."""
        return chunk_positions(at, self.first, self.size, self.tail)


def chunk_positions(
    at: Int[Tensor, "*rows count"], first: Int[Tensor, "*rows rank"], size: int, tail: int
) -> Int[Tensor, "*rows count"]:
    """The positions in their rows of the keys `at` of Chunks(kept, first, size, tail).kept."""
    rank = first.shape[-1]
    in_chosen = first.gather(-1, (at // size).clamp(max=rank - 1)) * size + at % size
    return torch.where(at < rank * size, in_chosen, at - rank * size + tail)


def _chunks_kept(
    row: Float[Tensor, "*rows width"], rank: int, size: int, into: Tensor | None = None
) -> Chunks:
    """The Chunks of `row`, the keys kept written into `into` when given (else a new tensor)."""
    width = row.shape[-1]
    chunks = width // size
    in_chunks = row[..., : chunks * size].reshape(*row.shape[:-1], chunks, size)  # a view
    best, chosen = in_chunks.amax(-1).topk(rank + 1, dim=-1)  # the rank chosen, and the largest other
    first = chosen[..., :rank].sort(dim=-1).values  # [*rows, rank] ascending: position order is kept
    tail = chunks * size
    kept = row.new_empty(*row.shape[:-1], rank * size + width - tail) if into is None else into
    kept[..., : rank * size] = _chunks_of(row, first, size).view(*row.shape[:-1], rank * size)
    if tail < width:  # copied apart: torch.cat was 3x slower
        kept[..., rank * size :] = row[..., tail:]
    return Chunks(kept, first, size, tail, best)


def wide_chunks(
    weights: Float[Tensor, "*rows key_pos"], rank: int, into: Tensor | None = None
) -> Chunks | None:
    """The Chunks of TOP_WIDE_CHUNK keys of rows at least four times as wide as they keep, when they hold
    each row's top `rank` for sure: the rank-th largest chunk maximum above every other chunk's (one look
    from the host), so that every key left out is below the rank-th largest kept. None otherwise (the rows
    are searched whole)."""
    if rank * TOP_WIDE_CHUNK * 4 > weights.shape[-1]:
        return None
    chunks = _chunks_kept(weights, rank, TOP_WIDE_CHUNK, into)
    return chunks if bool((chunks.best[..., rank] < chunks.best[..., rank - 1]).all()) else None


class _TopSearch:
    """top_keys and top_weights of the blocks of SummaryReducer, searched for every kv head's block of the
    same rows at once: a block's own step is narrowing its rows to their chunks of TOP_WIDE_CHUNK keys
    (wide_chunks, at once: the block's weights are gone after it), whose keys wait in `kept`; the search
    among them (top_keys_in_chunks: about 30 small operations, whatever their size) runs once for the
    blocks whose keys fill TOP_PENDING_ELEMENTS, or when the rows change, or at the end (`flush`)."""

    def __init__(
        self, keys: Int[Tensor, "batch head query_pos rank"], top: Float[Tensor, "batch head query_pos rank"]
    ):
        self.keys, self.top, self.rank = keys, top, keys.shape[-1]
        self.rows: tuple[int, int, int] | None = None  # start, stop and width of the waiting blocks
        self.kept: Tensor | None = None  # [batch, room (heads), rows, kept]: the waiting blocks' keys
        self.first: Tensor | None = None  # [batch, room, rows, rank]: their chunks
        self.waiting: list[tuple[slice, int]] = []  # each waiting block's heads and their count
        self.filled, self.tail = 0, 0

    def add(self, start: int, weights: Float[Tensor, "batch head rows width"], of_heads: slice) -> None:
        """The top keys of a block's rows `start` ..: searched now when its rows are narrow, else narrowed
        and left waiting."""
        heads, rows, width = weights.shape[1:]
        if self.rank * TOP_WIDE_CHUNK * 4 > width:  # too narrow to narrow by wide chunks: top_keys_of at once
            self._write(start, of_heads, *top_keys_of(weights, self.rank))
            return
        rows_of = (start, start + rows, width)
        if self.rows != rows_of or self.kept is None or self.filled + heads > self.kept.shape[1]:
            self.flush()
            self._make_room(weights)
        assert self.kept is not None and self.first is not None
        wide = wide_chunks(weights, self.rank, self.kept[:, self.filled : self.filled + heads])
        if wide is None:  # unsure: searched now
            self._write(start, of_heads, *top_keys_in_chunks(weights, self.rank))
            return
        self.first[:, self.filled : self.filled + heads] = wide.first
        self.rows, self.tail = rows_of, wide.tail
        self.waiting.append((of_heads, heads))
        self.filled += heads

    def _make_room(self, weights: Float[Tensor, "batch head rows width"]) -> None:
        """Room for the keys kept of as many blocks like `weights` as TOP_PENDING_ELEMENTS allows (at least
        one, at most every head); the room already made when it fits."""
        batch, heads, rows, width = weights.shape
        kept = self.rank * TOP_WIDE_CHUNK + width % TOP_WIDE_CHUNK
        room = max(heads, min(self.keys.shape[1], TOP_PENDING_ELEMENTS // (batch * rows * kept)))
        if self.kept is not None and self.kept.shape == (batch, room, rows, kept):
            return
        self.kept = None  # the old room freed before the new one is made
        self.kept = weights.new_empty(batch, room, rows, kept)
        self.first = torch.empty(batch, room, rows, self.rank, dtype=torch.int64, device=weights.device)

    def flush(self) -> None:
        """The search among the waiting blocks' keys, its answers written."""
        if not self.waiting or self.rows is None:
            return
        assert self.kept is not None and self.first is not None
        start = self.rows[0]
        found, top = top_keys_in_chunks(self.kept[:, : self.filled], self.rank)
        keys = chunk_positions(found, self.first[:, : self.filled], TOP_WIDE_CHUNK, self.tail)
        done = 0
        for of_heads, heads in self.waiting:
            self._write(start, of_heads, keys[:, done : done + heads], top[:, done : done + heads])
            done += heads
        self.waiting, self.filled, self.rows = [], 0, None

    def _write(self, start: int, of_heads: slice, keys: Tensor, top: Tensor) -> None:
        stop = start + keys.shape[2]
        self.keys[:, of_heads, start:stop] = keys
        self.top[:, of_heads, start:stop] = top


def _chunks_of(
    row: Float[Tensor, "*rows width"], chunks: Int[Tensor, "*rows count"], size: int
) -> Float[Tensor, "rows_count size"]:
    """The chunks `chunks` of `size` keys of each row, copied out as rows of one matrix: an index_select of
    the rows' windows of `size` keys (one view of the rows' memory), which copies each chunk whole; a gather
    takes an index per key (ten times slower on a CPU)."""
    flat = row.reshape(-1, row.shape[-1])  # a view unless the rows' strides do not merge
    if flat.stride(-1) != 1:
        flat = flat.contiguous()
    count, width = flat.shape
    stride = flat.stride(0) if count > 1 else width
    windows = flat.as_strided(((count - 1) * stride + width - size + 1, size), (1, 1))  # key i .. i + size
    starts = chunks.reshape(count, -1) * size + torch.arange(count, device=row.device)[:, None] * stride
    return windows.index_select(0, starts.reshape(-1))


def top_keys_in_rows(
    weights: Float[Tensor, "*rows key_pos"], rank: int
) -> tuple[Int[Tensor, "*rows rank"], Float[Tensor, "*rows rank"]]:
    """The positions of the `rank` largest weights of each row, largest first, ties to the lower position
    (torch.topk leaves the order of equal values open), and those weights. When no weight outside torch's
    pick equals the rank-th largest, its pick is right and only its order is fixed (when two of its weights
    are equal); otherwise every weight above the rank-th largest is taken, then the lowest positions holding
    exactly it, until the row has `rank`."""
    values, positions = weights.topk(rank, dim=-1, sorted=True)
    threshold = values[..., -1:]  # [*rows, 1]
    only = bool(((weights >= threshold).sum(-1) == rank).all())
    if only and bool((values[..., :-1] > values[..., 1:]).all()):  # distinct: topk's order is the only one
        return positions, values
    if only:  # the pick is the only one possible
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


class _RowTerms(NamedTuple):
    """What SummaryReducer's sums need of rows start .. start + rows, whatever the head: which rows are
    real (as booleans and as the sum dtype's 0 and 1), and sums_of, the matrix that sums the real rows of
    each of the pool's query blocks."""

    start: int
    rows: int
    real: Bool[Tensor, "batch rows"]
    sums_of: Float[Tensor, "batch 1 query_blocks rows"]
    real_numbers: Float[Tensor, "batch rows"]


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
        token_scores = names & set(TOKEN_SCORE_NAMES)
        self.pairs = None if self.token_ids is None or not token_scores else TokenPairs(self.token_ids)

        def zeros(*shape: int, dtype: torch.dtype | None = None) -> Tensor:
            return torch.zeros(*shape, dtype=dtype or self.sum_dtype, device=device)

        self.entropy = zeros(batch, heads, seq, dtype=like.dtype) if "entropy" in names else None
        wants_top = bool(names & {"top_keys", "top_weights"})
        self.top_search = (
            _TopSearch(
                zeros(batch, heads, seq, self.rank, dtype=torch.int64),
                zeros(batch, heads, seq, self.rank, dtype=like.dtype),
            )
            if wants_top
            else None
        )
        self.received = zeros(batch, heads, seq_kv) if "received" in names else None
        pool = asked.pool
        self.query_blocks, self.key_blocks = -(-seq // pool), -(-seq_kv // pool)
        pooled = "pooled_weights" in names
        self.pooled = zeros(batch, heads, self.query_blocks, self.key_blocks) if pooled else None
        self.matched = {name: zeros(batch, heads) for name in HEAD_SCORES if name in names}
        self.total = zeros(batch, heads) if self.matched else None  # sum(w) over the real queries
        self.sink = zeros(batch, heads) if "sink_score" in names else None
        self._last_patterns: tuple[tuple[int, int, int], list[dict[TensorName, Tensor]]] | None = None
        self._last_rows: _RowTerms | None = None

    @property
    def wants_entropy(self) -> bool:
        """Whether `add` uses the blocks' entropy (computed with their softmax: service/compute/fused.py)."""
        return self.entropy is not None

    def add(
        self,
        start: int,
        weights: Float[Tensor, "batch head rows width"],
        entropy: Float[Tensor, "batch head rows"] | None = None,
        of_heads: slice = slice(None),
    ) -> None:
        """The weights of query rows start .. start + rows of the heads `of_heads` (default: all) over the
        first `width` keys (every key after them has weight 0 in these rows: a causal block's later keys).
        `entropy`: each row's entropy, computed with the weights (else from them here)."""
        rows, width = weights.shape[2], weights.shape[3]
        stop = start + rows
        if self.entropy is not None:
            if entropy is None:
                entropy = torch.special.entr(weights).sum(-1)
            self.entropy[:, of_heads, start:stop] = entropy
        if self.top_search is not None:
            reach = min(self.seq_kv, max(width, self.rank))  # a row fills its ranks with later keys, weight 0
            widened = weights if reach == width else F.pad(weights, (0, reach - width))
            self.top_search.add(start, widened, of_heads)
        if self.received is None and self.pooled is None and self.total is None and self.sink is None:
            return
        shared = self._rows(start, rows)
        summed = weights.to(self.sum_dtype)
        self._sums(start, summed, shared, of_heads)
        if self.matched:
            self._match(start, summed, shared, of_heads)

    def _rows(self, start: int, rows: int) -> _RowTerms:
        """What the blocks of rows start .. start + rows share (every kv head's block of them, one after
        another: service/compute/blocked.py's head_blocks), made once for them."""
        if self._last_rows is not None and self._last_rows.start == start and self._last_rows.rows == rows:
            return self._last_rows
        real = self.query_real[:, start : start + rows]  # [batch, rows]
        pool = self.asked.pool
        # by the pool's query blocks even when pooled_weights is not asked for: each sum is then added in the
        # same order whatever else a request asks for (bit for bit the same sink_score in every answer)
        query_block = torch.arange(start, start + rows, device=real.device) // pool - start // pool  # [rows]
        blocks = (start + rows - 1) // pool - start // pool + 1
        each = torch.arange(blocks, device=real.device)[:, None]  # [query blocks, 1]
        sums_of = (query_block[None, :] == each) & real[:, None, :]  # [batch, query blocks, rows]
        self._last_rows = _RowTerms(
            start, rows, real, sums_of[:, None].to(self.sum_dtype), real.to(self.sum_dtype)
        )
        return self._last_rows

    def _sums(
        self,
        start: int,
        weights: Float[Tensor, "batch head rows width"],
        shared: _RowTerms,
        of_heads: slice,
    ) -> None:
        """received, pooled_weights, sink_score and the head scores' sum(w), from one matrix product that
        sums the real rows of each query block: [query blocks, rows] x [rows, width] per head, one read of
        the weights; every other sum is over its small product."""
        batch, heads, rows, width = weights.shape
        pool = self.asked.pool
        first = start // pool
        by_query_block = shared.sums_of @ weights  # [batch, head, query blocks, width]
        blocks = by_query_block.shape[2]
        received = by_query_block.sum(2)  # [batch, head, width]
        if self.received is not None:
            self.received[:, of_heads, :width] += received
        if self.sink is not None:
            self.sink[:, of_heads] += received[..., 0]
        if self.total is not None:
            self.total[:, of_heads] += received.sum(-1)
        if self.pooled is not None:
            whole, key_blocks = width // pool, -(-width // pool)
            target = self.pooled[:, of_heads, first : first + blocks, :]
            target[..., :whole] += (
                by_query_block[..., : whole * pool].reshape(batch, heads, blocks, whole, pool).sum(-1)
            )
            if key_blocks > whole:  # the last key block, shorter
                target[..., whole] += by_query_block[..., whole * pool :].sum(-1)

    def _match(
        self,
        start: int,
        weights: Float[Tensor, "batch head rows width"],
        shared: _RowTerms,
        of_heads: slice,
    ) -> None:
        """The weight of the real rows on each head score's detection pattern (TransformerLens'
        get_*_detection_pattern): previous token j = i - 1; duplicate token j < i with the token of i;
        induction j <= i with the token of i at j - 1."""
        batch, heads, rows, width = weights.shape
        if "previous_token_score" in self.matched:
            # key i - 1 of row r (query start + r) is at column start - 1 + r: a diagonal, from row 1 when
            # the first row is query 0 (which has no previous token)
            previous = weights.diagonal(start - 1, dim1=-2, dim2=-1)  # [batch, head, length]
            first_row = 1 if start == 0 else 0
            counted = shared.real_numbers[:, first_row : first_row + previous.shape[-1]]  # [batch, length]
            on_previous = torch.matmul(previous, counted[:, :, None])[..., 0]  # [batch, head]
            self.matched["previous_token_score"][:, of_heads] += on_previous
        if self.pairs is None:
            return
        flat = weights.reshape(batch, heads, rows * width)
        for text, patterns in enumerate(self._token_patterns(start, rows, width, shared.real)):
            for name, pattern in patterns.items():
                if pattern.dtype == torch.bool:  # dense: one matrix-vector product over the block
                    on_pattern = flat[text] @ pattern.to(flat.dtype)  # [head]
                else:  # the pairs' flat positions
                    on_pattern = flat[text].index_select(-1, pattern).sum(-1)  # [head]
                self.matched[name][text, of_heads] += on_pattern

    def _token_patterns(
        self, start: int, rows: int, width: int, real_rows: Bool[Tensor, "batch rows"]
    ) -> list[dict[TensorName, Tensor]]:
        """For each text, the duplicate-token and induction patterns of rows start .. start + rows over
        `width` keys: the flat positions of their pairs (service/compute/token_pairs.py), or where a block
        has too many pairs, dense [rows * width] booleans. The last rows' are kept, since the blocks of every
        kv head of the same rows follow each other (service/compute/blocked.py's head_blocks)."""
        assert self.pairs is not None and self.token_ids is not None
        if self._last_patterns is not None and self._last_patterns[0] == (start, rows, width):
            return self._last_patterns[1]
        self._last_patterns = None  # the old ones freed before the new ones are made
        stop = start + rows
        made: list[dict[TensorName, Tensor]] = []
        for text, ids in enumerate(self.token_ids):
            pairs = self.pairs.of_rows(text, start, stop, width, real_rows[text])
            found: dict[TensorName, Tensor] = (
                {"duplicate_token_score": pairs.duplicate, "induction_score": pairs.induction}
                if pairs is not None
                else _dense_patterns(ids, start, stop, width, real_rows[text])
            )
            made.append({name: found[name] for name in TOKEN_SCORE_NAMES if name in self.matched})
        self._last_patterns = ((start, rows, width), made)
        return made

    def finish(self) -> dict[TensorName, Tensor]:
        """The summaries asked for, by name in SUMMARY_NAMES order."""
        found: dict[TensorName, Tensor] = {}
        if self.entropy is not None:
            found["entropy"] = self.entropy
        if self.top_search is not None:
            self.top_search.flush()
            found["top_keys"], found["top_weights"] = self.top_search.keys, self.top_search.top
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


def _dense_patterns(
    ids: Int[Tensor, " pos"], start: int, stop: int, width: int, real: Bool[Tensor, " rows"]
) -> dict[TensorName, Bool[Tensor, " rows_width"]]:
    """One text's duplicate-token and induction patterns of rows start .. stop over `width` keys, drawn
    whole: for a block with more pairs than TokenPairs lists."""
    query = torch.arange(start, stop, device=ids.device)[:, None]  # [rows, 1]
    key = torch.arange(width, device=ids.device)[None, :]  # [1, width]
    token = ids[start:stop, None]  # [rows, 1]
    before = torch.cat([torch.full_like(ids[:1], -1), ids[: width - 1]])  # [width]: the token at j - 1
    real_row = real[:, None]  # [rows, 1]
    duplicate = (token == ids[None, :width]) & (key < query) & real_row  # [rows, width]
    induction = (token == before[None, :]) & (key <= query) & real_row
    return {"duplicate_token_score": duplicate.reshape(-1), "induction_score": induction.reshape(-1)}
