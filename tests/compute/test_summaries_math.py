"""The summaries' math (service/compute/summaries.py, blocked.py) against references written here: each
summary is the same reduction of the whole weights, computed in float64 with numpy row by row, and the
head scores are TransformerLens' detect_head (error_measure="mul", exclude_bos=False,
exclude_current_token=False), its detection patterns written from its source
(transformer_lens/head_detector.py). Blocked equals unblocked: many small blocks against one."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from schemas.axes import SUMMARY_NAMES, TensorName
from service.compute import blocked, summaries, token_pairs
from service.compute.attention import Projections, attention
from service.compute.blocked import Visibility, attention_blocked
from service.compute.summaries import SummaryReducer, SummaryRequest, default_pool, top_keys_of
from service.compute.token_pairs import TokenPairs


def reference_weights(q, k, scale, allowed):  # float64, [batch, head, query, key]; kv head h // group
    group = q.shape[1] // k.shape[1]
    k = np.repeat(k, group, axis=1)
    scores = np.einsum("bhqd,bhkd->bhqk", q, k) * scale
    scores = np.where(allowed, scores, -np.inf)
    weights = np.zeros_like(scores)
    for index in np.ndindex(*scores.shape[:3]):
        row = scores[index]
        if np.isfinite(row).any():
            e = np.exp(row - row[np.isfinite(row)].max())
            weights[index] = e / e.sum()
    return weights


def reference_summaries(weights, query_real, key_real, tokens, top_k, pool):
    """Each summary from the whole float64 weights, written plainly."""
    batch, heads, seq, seq_kv = weights.shape
    rank = min(top_k, seq_kv)
    entropy = np.zeros((batch, heads, seq))
    top_keys = np.zeros((batch, heads, seq, rank), dtype=np.int64)
    top_weights = np.zeros((batch, heads, seq, rank))
    for b, h, i in np.ndindex(batch, heads, seq):
        row = weights[b, h, i]
        entropy[b, h, i] = -sum(w * math.log(w) for w in row if w > 0)
        order = sorted(range(seq_kv), key=lambda j: (-row[j], j))[:rank]  # largest first, ties lower first
        top_keys[b, h, i] = order
        top_weights[b, h, i] = row[order]
    real = weights * query_real[:, None, :, None]
    received = real.sum(2)
    qb, kb = -(-seq // pool), -(-seq_kv // pool)
    pooled = np.zeros((batch, heads, qb, kb))
    for b, h, x, y in np.ndindex(batch, heads, qb, kb):
        rows = [i for i in range(x * pool, min(seq, x * pool + pool)) if query_real[b, i]]
        cols = [j for j in range(y * pool, min(seq_kv, y * pool + pool)) if key_real[b, j]]
        pooled[b, h, x, y] = weights[b, h][np.ix_(rows, cols)].mean() if rows and cols else 0.0
    sink = real[..., 0].sum(-1) / np.maximum(query_real.sum(-1), 1)[:, None]
    scores = {name: np.zeros((batch, heads)) for name in TL_PATTERNS}
    for b in range(batch if seq == seq_kv else 0):  # TransformerLens' patterns are self-attention's
        keep = np.flatnonzero(query_real[b])  # TransformerLens runs each text alone: its real tokens
        for name, pattern_of in TL_PATTERNS.items():
            if tokens is None and name != "previous_token_score":
                continue
            pattern = pattern_of(None if tokens is None else tokens[b][keep], len(keep))
            for h in range(heads):
                pattern_weights = weights[b, h][np.ix_(keep, keep)]
                scores[name][b, h] = tl_detect_mul(pattern_weights, pattern)
    return {
        "entropy": entropy,
        "top_keys": top_keys,
        "top_weights": top_weights,
        "received": received,
        "pooled_weights": pooled,
        "sink_score": sink,
        **scores,
    }


# TransformerLens' head_detector.py, written again in numpy


def tl_previous_pattern(tokens, seq):
    pattern = np.zeros((seq, seq))
    pattern[1:, :-1] = np.eye(seq - 1)
    return np.tril(pattern)


def tl_duplicate_pattern(tokens, seq):
    token_pattern = np.repeat(tokens[None, :], seq, axis=0)
    eq_mask = np.equal(token_pattern, token_pattern.T).astype(int)
    np.fill_diagonal(eq_mask, 0)
    return np.tril(eq_mask)


def tl_induction_pattern(tokens, seq):
    duplicate = tl_duplicate_pattern(tokens, seq)
    shifted = np.roll(duplicate, shift=1, axis=1)
    result = np.concatenate([np.zeros((seq, 1)), shifted[:, 1:]], axis=1)
    return np.tril(result)


def tl_detect_mul(attention_pattern, detection_pattern):  # exclude_bos=False, exclude_current_token=False
    score = attention_pattern * detection_pattern
    return score.sum() / attention_pattern.sum()


TL_PATTERNS = {
    "previous_token_score": tl_previous_pattern,
    "duplicate_token_score": tl_duplicate_pattern,
    "induction_score": tl_induction_pattern,
}


def _case(seed, batch, heads, kv_heads, seq, d_k, lengths, causal):
    generator = np.random.default_rng(seed)
    q = generator.normal(size=(batch, heads, seq, d_k)) * 1.5
    tokens = generator.integers(0, 4, size=(batch, seq))  # few distinct tokens: duplicates and inductions
    # equal tokens share their key vector: equal weights, whose order top_keys decides
    by_token = generator.normal(size=(batch, kv_heads, 4, d_k)) * 1.5
    k = np.stack([by_token[b][:, tokens[b]] for b in range(batch)])  # [batch, kv_head, seq, d_k]
    v = generator.normal(size=(batch, kv_heads, seq, d_k))
    real = np.arange(seq)[None, :] < np.asarray(lengths)[:, None]  # right padding
    allowed = np.broadcast_to(real[:, None, None, :], (batch, 1, seq, seq))
    if causal:
        allowed = allowed & np.tril(np.ones((seq, seq), dtype=bool))
    return q, k, v, tokens, real, allowed


@pytest.mark.parametrize(
    ("batch", "heads", "kv_heads", "seq", "lengths", "causal", "top_k", "pool"),
    [
        (1, 2, 2, 9, [9], False, 3, 2),
        (2, 4, 2, 11, [11, 7], True, 5, 3),  # grouped-query heads, padding, causal
        (2, 2, 1, 6, [6, 4], False, 8, 4),  # top_k above seq_kv: rank = seq_kv
        (1, 3, 3, 13, [13], True, 1, 5),
    ],
)
def test_each_summary_is_the_reduction_of_the_whole_weights(
    monkeypatch, batch, heads, kv_heads, seq, lengths, causal, top_k, pool
):
    monkeypatch.setattr(blocked, "BLOCK_ELEMENTS", 2 * batch * heads * seq)  # two rows a block
    q, k, v, tokens, real, allowed = _case(7 + seq, batch, heads, kv_heads, seq, 4, lengths, causal)
    scale = 0.5
    weights = reference_weights(q, k, scale, allowed)
    expected = reference_summaries(weights, real, real, tokens, top_k, pool)

    asked = SummaryRequest(SUMMARY_NAMES, top_k, pool)
    key_mask = torch.from_numpy(real)
    reducer = SummaryReducer(
        asked, batch, heads, seq, seq, torch.empty(0, dtype=torch.float64), key_mask, key_mask,
        torch.from_numpy(tokens),
    )  # fmt: skip
    mask = Visibility(key_mask, causal, seq)
    context = blocked.attend_blocked(
        torch.from_numpy(q), torch.from_numpy(k), torch.from_numpy(v), scale, mask, reducer
    )
    found = reducer.finish()
    assert list(found) == list(SUMMARY_NAMES)
    for name in SUMMARY_NAMES:
        if name == "top_keys":
            np.testing.assert_array_equal(found[name].numpy(), expected[name], err_msg=name)
        else:
            np.testing.assert_allclose(found[name].numpy(), expected[name], atol=1e-12, err_msg=name)
    expected_context = np.einsum("bhqk,bhkd->bhqd", weights, np.repeat(v, heads // kv_heads, axis=1))
    np.testing.assert_allclose(context.numpy(), expected_context, atol=1e-12)


def test_the_head_scores_find_the_heads_they_name():
    """Weights built as a previous-token head, and as an induction head on a repeated sequence, score 1 on
    their own pattern (and previous-token 0 on the induction head's)."""
    seq = 8
    tokens = np.array([[5, 6, 7, 8, 5, 6, 7, 8]])
    previous = np.zeros((seq, seq))
    previous[0, 0] = 1
    previous[np.arange(1, seq), np.arange(seq - 1)] = 1
    induction = np.eye(seq)
    for i in range(4, seq):
        induction[i] = 0
        induction[i, i - 3] = 1  # the token after the earlier copy of token i
    weights = np.stack([previous, induction])[None]  # [1, 2, seq, seq]
    reducer = SummaryReducer(
        SummaryRequest(("previous_token_score", "induction_score"), 5, 1), 1, 2, seq, seq,
        torch.empty(0, dtype=torch.float64), token_ids=torch.from_numpy(tokens),
    )  # fmt: skip
    reducer.add(0, torch.from_numpy(weights))
    found = reducer.finish()
    assert found["previous_token_score"].numpy()[0, 0] == pytest.approx(7 / 8)
    assert found["previous_token_score"].numpy()[0, 1] == pytest.approx(0.0)
    expected = reference_summaries(weights, np.ones((1, seq), bool), np.ones((1, seq), bool), tokens, 1, 1)
    np.testing.assert_allclose(found["induction_score"].numpy(), expected["induction_score"])
    assert found["induction_score"].numpy()[0, 1] == pytest.approx(4 / 8)


def test_top_keys_break_ties_to_the_lower_position_and_fill_with_masked_keys():
    weights = torch.tensor([[0.25, 0.5, 0.25, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    keys, top = top_keys_of(weights, 3)
    assert keys.tolist() == [[1, 0, 2], [2, 0, 1], [0, 1, 2]]
    assert top.tolist() == [[0.5, 0.25, 0.25], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]


@pytest.mark.parametrize("levels", [None, 7, 1000])
@pytest.mark.parametrize(("width", "stride"), [(900, 900), (7000, 7000), (7000, 7100)])
def test_top_keys_of_wide_rows_match_a_full_sort(levels, width, stride):
    """Rows wide enough for the search by chunk maxima (service/compute/summaries.py's TOP_CHUNKS): 900
    keys (chunks of 32), 7,000 (chunks of 256, then of 32, a tail after the last whole chunk at each), and
    7,000 keys of rows 7,100 apart (a block's weights cut from wider rows); distinct weights; a few levels
    (ties across chunks: the whole rows are searched); many levels (ties inside the chosen chunks, as well
    as across), each against a plain sort of each row, largest first, ties lower first."""
    generator = np.random.default_rng(5)
    rows = generator.random((3, 4, stride))
    if levels is not None:
        rows = np.round(rows * levels) / levels
    weights = rows[..., :width]  # a view: the writes below are rows'
    weights[0, 0, 17] = weights[0, 0, 3] = weights[0, 0].max() + 1  # a tie at the top, inside one chunk
    weights[1, 2, width - 1] = weights[1, 2].max() + 1  # the largest in the tail after the last whole chunk
    rank = 6
    keys, top = top_keys_of(torch.from_numpy(rows)[..., :width], rank)
    for index in np.ndindex(*weights.shape[:-1]):
        row = weights[index]
        expected = sorted(range(row.size), key=lambda j: (-row[j], j))[:rank]
        assert keys[index].tolist() == expected, index
        np.testing.assert_array_equal(top[index].numpy(), row[expected])


@pytest.mark.parametrize("pending", [1 << 20, 1])
def test_reducer_top_keys_of_wide_blocks_match_a_full_sort(monkeypatch, pending):
    """SummaryReducer's top keys of blocks of rows wide enough to wait for the search of every head's block
    of the same rows (summaries.py's _TopSearch), blocks given out of order and one head or every head at a
    time, two texts: a tie at the largest weight (inside the chunks kept), six equal weights in six wide
    chunks (unsure: that block searched at once), the largest weight after the last whole chunk; with
    room for every head's keys, and for one block's at a time (pending 1). Against a plain sort of each
    row, largest first, ties lower first."""
    monkeypatch.setattr(summaries, "TOP_PENDING_ELEMENTS", pending)
    generator = np.random.default_rng(7)
    batch, heads, seq, seq_kv, rank, rows = 2, 3, 12, 6000, 5, 4
    weights = generator.random((batch, heads, seq, seq_kv))
    weights[0, 0, 1, [40, 5000]] = 2.0
    weights[0, 1, 4, [10, 300, 600, 900, 1200, 1500]] = 2.0
    weights[1, 2, 9, 5999] = 3.0
    reducer = SummaryReducer(
        SummaryRequest(("top_keys", "top_weights"), rank, 1), batch, heads, seq, seq_kv,
        torch.empty(0, dtype=torch.float64),
    )  # fmt: skip
    tensor = torch.from_numpy(weights)
    for start in (8, 0):
        for head in range(heads):
            reducer.add(start, tensor[:, head : head + 1, start : start + rows], None, slice(head, head + 1))
    reducer.add(4, tensor[:, :, 4 : 4 + rows])
    found = reducer.finish()
    for index in np.ndindex(batch, heads, seq):
        row = weights[index]
        expected = sorted(range(row.size), key=lambda j: (-row[j], j))[:rank]
        assert found["top_keys"][index].tolist() == expected, index
        np.testing.assert_array_equal(found["top_weights"][index].numpy(), row[expected])


@pytest.mark.parametrize("causal", [False, True])
def test_blocked_equals_unblocked(monkeypatch, causal):
    """attention_blocked in blocks of 3 rows against attention() whole (context, output), and the summaries
    reduced from attention()'s weights as one block against those reduced block by block."""
    generator = torch.Generator().manual_seed(3)
    batch, seq, d_model, heads = 2, 10, 12, 3
    x = torch.randn(batch, seq, d_model, generator=generator)
    projections = Projections(*(torch.randn(d_model, d_model, generator=generator) / 3 for _ in range(4)))
    key_mask = torch.tensor([[True] * seq, [True] * 6 + [False] * 4])
    allowed = key_mask[:, None, None, :] & (torch.ones(seq, seq).tril().bool() if causal else True)
    whole = attention(x, x, x, projections, heads, 0.4, allowed)
    monkeypatch.setattr(blocked, "BLOCK_ELEMENTS", 3 * batch * heads * seq)
    asked = SummaryRequest(("entropy", "top_keys", "top_weights", "received", "pooled_weights"), 4, 3)

    def reducer(like):
        return SummaryReducer(asked, batch, heads, seq, seq, like, key_mask, key_mask)

    parts = attention_blocked(x, x, x, projections, heads, 0.4, Visibility(key_mask, causal, seq), reducer)
    torch.testing.assert_close(parts.context, whole.context)
    torch.testing.assert_close(parts.output, whole.output)
    one_block = reducer(whole.weights)
    one_block.add(0, whole.weights)
    for name, tensor in one_block.finish().items():
        torch.testing.assert_close(parts.summaries[name], tensor, msg=name)


def test_default_pool_gives_at_most_128_blocks():
    assert default_pool(100, 100) == 1
    assert default_pool(128, 64) == 1
    assert default_pool(129, 10) == 2
    assert default_pool(16384, 16384) == 128
    assert default_pool(16385, 3) == 129


def _texts_with_repeats(seed: int, batch: int, seq: int, distinct: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, distinct, size=(batch, seq))


@pytest.mark.parametrize("distinct", [1, 3, 50])  # one token repeated (every earlier key), some, few repeats
@pytest.mark.parametrize(("start", "stop", "width"), [(0, 40, 40), (7, 19, 19), (12, 30, 40), (20, 33, 25)])
def test_listed_token_pairs_are_transformer_lens_patterns(monkeypatch, distinct, start, stop, width):
    """TokenPairs' flat positions in a block of rows start .. stop over `width` keys (some rows padded) are
    exactly the nonzero entries of TransformerLens' duplicate-token and induction patterns there."""
    monkeypatch.setattr(token_pairs, "MAX_PAIR_SHARE", math.inf)  # listed, however many
    seq = 40
    tokens = _texts_with_repeats(distinct, 2, seq, distinct)
    real = np.ones((2, seq), dtype=bool)
    real[1, 15:18] = False  # rows not counted
    pairs = TokenPairs(torch.from_numpy(tokens))
    for text in range(2):
        found = pairs.of_rows(text, start, stop, width, torch.from_numpy(real[text, start:stop]))
        assert found is not None
        listed_by_name = {"duplicate_token_score": found.duplicate, "induction_score": found.induction}
        for name, listed in listed_by_name.items():
            pattern = TL_PATTERNS[name](tokens[text], seq)[start:stop, :width] * real[text, start:stop, None]
            assert sorted(listed.tolist()) == np.flatnonzero(pattern).tolist(), (name, text)


def test_token_pairs_past_their_share_are_drawn_dense():
    """A text of one token repeated has a pair for every earlier key: more than MAX_PAIR_SHARE of a block,
    so of_rows gives None (the reducer draws the dense patterns); a text of distinct tokens has none."""
    real = torch.ones(64, dtype=torch.bool)
    assert TokenPairs(torch.zeros(1, 64, dtype=torch.long)).of_rows(0, 0, 64, 64, real) is None
    listed = TokenPairs(torch.arange(64)[None]).of_rows(0, 0, 64, 64, real)
    assert listed is not None and listed.duplicate.numel() == listed.induction.numel() == 0


@pytest.mark.parametrize("share", [0.0, math.inf, token_pairs.MAX_PAIR_SHARE])  # dense, listed, as configured
@pytest.mark.parametrize("distinct", [1, 3, 40])
def test_token_scores_listed_or_dense_equal_transformer_lens(monkeypatch, share, distinct):
    """The duplicate-token and induction scores of a padded causal batch in blocks of 3 rows, with the pairs
    listed, drawn dense or either by the default share, against detect_head on the float64 weights."""
    monkeypatch.setattr(token_pairs, "MAX_PAIR_SHARE", share)
    batch, heads, seq = 2, 2, 23
    monkeypatch.setattr(blocked, "BLOCK_ELEMENTS", 3 * batch * heads * seq)
    q, k, v, _, real, allowed = _case(distinct, batch, heads, heads, seq, 4, [seq, 17], True)
    tokens = _texts_with_repeats(distinct, batch, seq, distinct)
    weights = reference_weights(q, k, 0.5, allowed)
    expected = reference_summaries(weights, real, real, tokens, 1, 1)
    names: tuple[TensorName, ...] = ("duplicate_token_score", "induction_score")
    key_mask = torch.from_numpy(real)
    reducer = SummaryReducer(
        SummaryRequest(names, 1, 1), batch, heads, seq, seq, torch.empty(0, dtype=torch.float64),
        key_mask, key_mask, torch.from_numpy(tokens),
    )  # fmt: skip
    mask = Visibility(key_mask, True, seq)
    blocked.attend_blocked(torch.from_numpy(q), torch.from_numpy(k), torch.from_numpy(v), 0.5, mask, reducer)
    found = reducer.finish()
    for name in names:
        np.testing.assert_allclose(found[name].numpy(), expected[name], atol=1e-12, err_msg=name)


@pytest.mark.parametrize("seq_kv", [9, 14, 20])  # fewer keys than queries, as many, more
def test_a_causal_only_mask_is_never_built(monkeypatch, seq_kv):
    """A mask that only hides later keys (no padding) is known without building it, rows x key_pos a block:
    the blocked context and summaries against the float64 reference with the lower-triangular mask, while
    building the mask fails."""
    monkeypatch.setattr(blocked, "BLOCK_ELEMENTS", 4 * 2 * seq_kv)  # 4 rows a block
    monkeypatch.setattr(Visibility, "rows", lambda *_: pytest.fail("the mask was built"))
    seq, heads = 14, 2
    generator = np.random.default_rng(seq_kv)
    q = generator.normal(size=(1, heads, seq, 4)) * 2
    k, v = generator.normal(size=(2, 1, 1, seq_kv, 4))
    allowed = (np.arange(seq_kv)[None, :] <= np.arange(seq)[:, None])[None, None]
    weights = reference_weights(q, k, 0.7, allowed)
    real = np.ones((1, seq), dtype=bool)
    expected = reference_summaries(weights, real, np.ones((1, seq_kv), dtype=bool), None, 3, 4)
    names: tuple[TensorName, ...] = ("entropy", "top_keys", "top_weights", "received", "pooled_weights")
    reducer = SummaryReducer(
        SummaryRequest(names, 3, 4), 1, heads, seq, seq_kv, torch.empty(0, dtype=torch.float64)
    )
    context = blocked.attend_blocked(
        torch.from_numpy(q), torch.from_numpy(k), torch.from_numpy(v), 0.7, Visibility(None, True, seq_kv),
        reducer,
    )  # fmt: skip
    found = reducer.finish()
    for name in names:
        np.testing.assert_allclose(found[name].numpy(), expected[name], atol=1e-12, err_msg=name)
    np.testing.assert_allclose(context.numpy(), np.einsum("bhqk,bhkd->bhqd", weights, v), atol=1e-12)
