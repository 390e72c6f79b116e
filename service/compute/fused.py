"""A block's softmax and entropy in one kernel (service/compute/blocked.py's _block), compiled by
torch.compile (inductor: C++ on CPUs, Triton on GPUs) when the setting compile_kernels asks for it, else
torch's own operations.

Per row of scaled scores s (masked scores at the dtype's lowest number): m = max s, e = exp(s - m), Z = sum e,
weights e / Z and entropy log Z - sum(e * (s - m)) / Z (two terms of one sign, no logarithm per weight). The
compiled kernel reads a row once for its maximum and once for Z and sum(e * (s - m)), then writes the weights,
the row still in the cache; torch's operations take five passes over the block (softmax, maximum, s - m,
w * (s - m), the largest weight) and a second block-sized tensor.

Compiling costs seconds (see docs/operations.md): it is done once per compute process, at its start
(`prepare`), never inside a request; a block goes through the compiled kernel only when it was compiled for
the block's device and dtype, the block is large enough for it to matter, and compiling worked. Otherwise, and
whenever compiling fails (no compiler, an old torch), torch's operations give the same numbers to float32
rounding.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable

import torch
from jaxtyping import Float
from torch import Tensor

log = logging.getLogger("attention_service.compute")

MIN_COMPILED_ELEMENTS = 1 << 14  # a smaller block is a request's only block: compiled or not, microseconds
_WARM_WIDTHS = (1000, 5000)  # keys of the warm-up blocks (prepare); other sizes reuse their graphs

Kernel = Callable[[Tensor], tuple[Tensor, Tensor]]
_compiled: dict[tuple[str, torch.dtype], Kernel] = {}  # by (device type, dtype): what prepare compiled


def softmax_entropy(
    scores: Float[Tensor, "*rows width"], out: Float[Tensor, "*rows width"] | None = None
) -> tuple[Float[Tensor, "*rows width"], Float[Tensor, "*rows"]]:
    """Each row's softmax and its entropy (nats) of contiguous scaled scores, masked with the dtype's lowest
    number (a row with every key masked gets uniform weights: the caller zeroes them). `scores` may be
    overwritten; `out`, where torch's operations write the weights (the compiled kernel makes its own)."""
    width = scores.shape[-1]
    kernel = _compiled.get((scores.device.type, scores.dtype))
    if kernel is None or scores.numel() < MIN_COMPILED_ELEMENTS or scores.numel() == width or width < 2:
        return eager_softmax_entropy(scores, out)
    with torch.no_grad(), _no_compiling():  # as prepared: a block needing a new graph runs _fused eagerly
        weights, entropy = kernel(scores.reshape(-1, width))  # 2-d: the same graphs for every block
    return weights.view(scores.shape), entropy.view(scores.shape[:-1])


def _no_compiling() -> contextlib.AbstractContextManager[object]:
    """Within it a compiled kernel never compiles again (a request must not wait for a compiler): a call
    that no prepared graph fits runs eagerly (torch >= 2.6; before, it compiles a graph, once)."""
    set_stance = getattr(torch.compiler, "set_stance", None)
    return contextlib.nullcontext() if set_stance is None else set_stance("eager_on_recompile")


def eager_softmax_entropy(
    scores: Float[Tensor, "*rows width"], out: Float[Tensor, "*rows width"] | None = None
) -> tuple[Float[Tensor, "*rows width"], Float[Tensor, "*rows"]]:
    """softmax_entropy with torch's operations: the softmax, then the scores less each row's largest and then
    w * (s - m) written over the scores, and the entropy -sum(w * (s - m)) - log(max w), since the largest
    weight is 1 / Z. Nothing block-sized is allocated (torch.linalg.vecdot makes its product in a new
    tensor: at 16k tokens a fresh 4 MB per block, whose page faults cost more than the softmax). The shift
    by m is kept: sum(w * s) - m, one pass fewer, loses up to 5e-5 nats to cancellation at scores of 5-100
    (measured against float64), where this form keeps 1e-6."""
    weights = torch.softmax(scores, -1, out=out)
    shifted = scores.sub_(scores.amax(-1, keepdim=True))
    products = torch.mul(weights, shifted, out=shifted)  # w * (s - m): masked keys give 0 * finite = 0
    entropy = -products.sum(-1) - torch.log(weights.amax(-1))
    return weights, entropy


def _fused(scores: Float[Tensor, "rows width"]) -> tuple[Float[Tensor, "rows width"], Float[Tensor, " rows"]]:
    """The compiled kernel's source: each row's softmax and entropy, written for inductor to fuse into one
    loop over the rows."""
    shifted = scores - scores.amax(-1, keepdim=True)
    exp = torch.exp(shifted)
    total = exp.sum(-1, keepdim=True)
    entropy = torch.log(total[:, 0]) - (exp * shifted).sum(-1) / total[:, 0]
    return exp / total, entropy


def prepare(device: torch.device, dtype: torch.dtype = torch.float32) -> float | None:
    """Compiles the kernel for `device` and `dtype` and checks it against torch's operations on warm-up
    blocks; its seconds, or None when compiling or the check failed (logged; blocks then take torch's
    operations). The warm-up blocks are those that each need a graph of their own: rows up to 4,096 keys
    wide and wider (inductor's reductions differ), of plain and of inference-mode tensors."""
    started = time.perf_counter()
    try:
        kernel = torch.compile(_fused, dynamic=True)
        for width in _WARM_WIDTHS:
            for inference in (False, True):
                with torch.inference_mode(inference):
                    _check(kernel, _warm_scores(width, device, dtype))
    except Exception as error:  # any failure of the compiler's toolchain: torch's operations instead
        log.warning(
            "fused kernel not compiled for %s (%s: %s); the blocked summaries use torch's operations",
            device,
            type(error).__name__,
            str(error)[:500],
        )
        return None
    _compiled[(device.type, dtype)] = kernel
    return time.perf_counter() - started


def _warm_scores(width: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Scores of a warm-up block: 16 rows, the second half of the keys masked, as causal blocks have them."""
    generator = torch.Generator().manual_seed(width)
    scores = torch.randn(16, width, generator=generator) * 4
    scores[:, width // 2 :] = torch.finfo(dtype).min
    return scores.to(device, dtype)


def _check(kernel: Kernel, scores: Tensor) -> None:
    with torch.no_grad():
        weights, entropy = kernel(scores)
    expected_weights, expected_entropy = eager_softmax_entropy(scores.clone())
    torch.testing.assert_close(weights, expected_weights)
    torch.testing.assert_close(entropy, expected_entropy)


def forget() -> None:
    """Drops the compiled kernels: blocks take torch's operations again (tests)."""
    _compiled.clear()
