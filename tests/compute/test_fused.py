"""The blocked summaries' softmax-and-entropy kernel (service/compute/fused.py): compiled, it gives the
float64 softmax and entropy and the same numbers as torch's operations; when compiling fails, prepare says so
and the blocks take torch's operations, with the same results."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from schemas.axes import SUMMARY_NAMES, TensorName
from service.compute import blocked, fused
from service.compute.blocked import Visibility, attend_blocked
from service.compute.summaries import SummaryReducer, SummaryRequest

LOWEST = torch.finfo(torch.float32).min


@pytest.fixture(autouse=True)
def no_kernels_left() -> Iterator[None]:
    fused.forget()
    yield
    fused.forget()


def reference(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """softmax and entropy -sum p log p in float64, a masked score (the lowest float32) as weight 0."""
    scores = scores.astype(np.float64)
    visible = scores > LOWEST
    exp = np.where(visible, np.exp(scores - scores.max(-1, keepdims=True)), 0.0)
    weights = exp / exp.sum(-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.where(weights > 0, weights * np.log(weights), 0.0).sum(-1)
    return weights, entropy


def blocks() -> Iterator[torch.Tensor]:
    """Scores of blocks large enough for the compiled kernel: rows narrower and wider than 4,096 keys (two
    graphs), masked keys (a causal block's), a head axis, a row with one visible key."""
    generator = torch.Generator().manual_seed(11)
    for shape in [(1, 1, 40, 1000), (1, 2, 9, 6000), (2, 3, 5, 700)]:
        scores = torch.randn(*shape, generator=generator) * 5
        rows, width = shape[2], shape[3]
        hidden = torch.arange(width)[None, :] > torch.arange(rows)[:, None] * (width // rows)  # causal-like
        scores.masked_fill_(hidden, LOWEST)
        yield scores


@pytest.mark.slow  # compiles: seconds with inductor's cache, half a minute without
def test_compiled_kernel_gives_the_float64_softmax_and_entropy_and_torch_operations_numbers(monkeypatch):
    seconds = fused.prepare(torch.device("cpu"))
    assert seconds is not None, "compiling failed (is a C++ compiler installed?)"
    compiled = fused.softmax_entropy
    for scores in blocks():
        assert scores.numel() >= fused.MIN_COMPILED_ELEMENTS
        expected_weights, expected_entropy = reference(scores.numpy())
        eager_weights, eager_entropy = fused.eager_softmax_entropy(scores.clone())
        with monkeypatch.context() as patch:  # the kernel, not torch's operations, answers
            patch.setattr(fused, "eager_softmax_entropy", pytest.fail)
            weights, entropy = compiled(scores.clone())
        np.testing.assert_allclose(weights.numpy(), expected_weights, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(entropy.numpy(), expected_entropy, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(weights, eager_weights)
        torch.testing.assert_close(entropy, eager_entropy)


@pytest.mark.slow  # compiles
def test_blocked_summaries_with_the_compiled_kernel_equal_those_of_torch_operations(monkeypatch):
    """A causal layer of 600 tokens in blocks of 200 rows of a head: every summary, kernel or not."""
    monkeypatch.setattr(blocked, "BLOCK_ELEMENTS", 200 * 600)
    generator = torch.Generator().manual_seed(4)
    batch, heads, seq, d_k = 1, 2, 600, 16
    q, k, v = (torch.randn(batch, heads, seq, d_k, generator=generator) for _ in range(3))
    tokens = torch.randint(0, 7, (batch, seq), generator=generator)
    asked = SummaryRequest(SUMMARY_NAMES, 4, 50)

    def summaries() -> dict[TensorName, torch.Tensor]:
        reducer = SummaryReducer(asked, batch, heads, seq, seq, q, token_ids=tokens)
        with torch.inference_mode():
            attend_blocked(q, k, v, d_k**-0.5, Visibility(None, True, seq), reducer)
        return reducer.finish()

    eager = summaries()
    assert fused.prepare(torch.device("cpu")) is not None
    compiled = summaries()
    for name in SUMMARY_NAMES:
        torch.testing.assert_close(compiled[name], eager[name], msg=name)


def test_a_failing_compiler_leaves_torch_operations(monkeypatch, caplog):
    """torch.compile fails at the first call when the toolchain is missing (no C++ compiler, no Triton):
    prepare reports it and the blocks still get their softmax and entropy."""

    def broken_compile(function, **options):
        def compiled(*args):
            raise RuntimeError("InductorError: no C++ compiler")

        return compiled

    monkeypatch.setattr(torch, "compile", broken_compile)
    with caplog.at_level("WARNING", logger="attention_service.compute"):
        assert fused.prepare(torch.device("cpu")) is None
    assert "no C++ compiler" in caplog.text
    for scores in blocks():
        expected_weights, expected_entropy = reference(scores.numpy())
        weights, entropy = fused.softmax_entropy(scores.clone())
        np.testing.assert_allclose(weights.numpy(), expected_weights, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(entropy.numpy(), expected_entropy, rtol=1e-5, atol=1e-5)


def test_torch_operations_allocate_nothing_block_sized():
    """eager_softmax_entropy writes its products over the scores: at 16k tokens a new block-sized tensor
    per block (torch.linalg.vecdot's product) cost more in page faults than the softmax itself. Its values
    against float64 (the masked blocks of the kernel's test)."""
    from torch.profiler import ProfilerActivity, profile

    for scores in blocks():
        expected_weights, expected_entropy = reference(scores.numpy())
        out = torch.empty_like(scores)
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiled:
            weights, entropy = fused.eager_softmax_entropy(scores, out)
        largest = max((event.cpu_memory_usage for event in profiled.events()), default=0)
        assert largest < scores.numel() * scores.element_size() // 8, largest
        np.testing.assert_allclose(weights.numpy(), expected_weights, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(entropy.numpy(), expected_entropy, rtol=1e-5, atol=1e-5)
