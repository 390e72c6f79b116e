"""The (query, key) pairs of the duplicate-token and induction patterns of a block of query rows, listed
rather than drawn: for real text few pairs match (each query's earlier copies of its own token), so summing
the block's weights at those pairs costs O(pairs) where a dense [rows, width] pattern costs a pass over every
weight and a pattern as large as the block, rebuilt for every block of rows.

With p ranging over the earlier positions holding the query's token (p < i, token p = token i):
duplicate-token pairs are (i, p), induction pairs (i, p + 1) (the key after an earlier copy: j <= i with token
j - 1 = token i). Both are TransformerLens' detection patterns (service/compute/summaries.py)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from jaxtyping import Bool, Int
from torch import Tensor

# a block whose pairs are more than this share of its rows x width takes the dense patterns instead: as
# many indices (8 bytes each) as weights cost more to gather than a matrix-vector product over the block
MAX_PAIR_SHARE = 0.25


class BlockPairs(NamedTuple):
    """Flat positions (row * width + key) in one text's [rows, width] block of weights."""

    duplicate: Int[Tensor, " pairs"]
    induction: Int[Tensor, " pairs"]


class TokenPairs:
    """Each position's earlier copies of its own token, for every text of a batch: positions sorted by token
    (stable, so ascending within a token), and for each position where its token's run starts in that
    order and how many earlier positions hold it. O(batch * pos) integers."""

    def __init__(self, token_ids: Int[Tensor, "batch pos"]):
        batch, seq = token_ids.shape
        device = token_ids.device
        self.order = torch.sort(token_ids, dim=-1, stable=True).indices  # [batch, pos]
        ranks = torch.arange(seq, device=device).expand(batch, seq)  # place in sorted order
        in_order = token_ids.gather(-1, self.order)
        starts = torch.ones_like(in_order, dtype=torch.bool)
        starts[:, 1:] = in_order[:, 1:] != in_order[:, :-1]  # a token's first position in sorted order
        run_start = torch.where(starts, ranks, 0).cummax(-1).values  # [batch, pos]
        self.first = torch.empty_like(run_start).scatter_(-1, self.order, run_start)  # by position
        self.earlier = torch.empty_like(run_start).scatter_(-1, self.order, ranks - run_start)

    def of_rows(
        self, text: int, start: int, stop: int, width: int, real: Bool[Tensor, " rows"]
    ) -> BlockPairs | None:
        """The pairs of text `text`'s real query rows start .. stop with keys below `width`, or None when
        they are more than MAX_PAIR_SHARE of the block (a text of few distinct tokens: dense is cheaper)."""
        rows = stop - start
        counts = self.earlier[text, start:stop] * real  # [rows]: earlier copies of each real row's token
        total = int(counts.sum())
        if total > MAX_PAIR_SHARE * rows * width:
            return None
        device = counts.device
        row = torch.repeat_interleave(torch.arange(rows, device=device), counts, output_size=total)
        before = torch.cumsum(counts, 0) - counts  # [rows]: pairs of the rows above
        nth = torch.arange(total, device=device) - before[row]  # [pairs]: which earlier copy
        key = self.order[text].gather(0, self.first[text, start:stop][row] + nth)  # [pairs]: p < i
        at = row * width + key  # [pairs]
        kept_key = key < width  # a key past the block's width has weight 0 in every row
        kept_next = key + 1 < width
        duplicate = at if bool(kept_key.all()) else at[kept_key]
        induction = (at + 1) if bool(kept_next.all()) else (at + 1)[kept_next]
        return BlockPairs(duplicate, induction)
