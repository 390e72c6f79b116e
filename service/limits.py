"""Size limits, decided from shapes alone before any tensor is allocated (413 with the limit and the estimate)."""

from __future__ import annotations

from schemas.request import AttendRequest
from service.errors import LimitExceeded
from service.inputs import Inputs
from service.settings import Settings
from service.weights import Dims


def tensor_shapes(inputs: Inputs, dims: Dims) -> dict[str, tuple[int, ...]]:
    b, h, n, m = inputs.batch, dims.num_heads, inputs.seq, inputs.seq_kv
    return {
        "q": (b, h, n, dims.d_k),
        "k": (b, h, m, dims.d_k),
        "v": (b, h, m, dims.d_v),
        "scores": (b, h, n, m),
        "scaled_scores": (b, h, n, m),
        "weights": (b, h, n, m),
        "context": (b, h, n, dims.d_v),
        "output": (b, n, dims.d_out),
    }


def _size(shape: tuple[int, ...]) -> int:
    total = 1
    for axis in shape:
        total *= axis
    return total


def _check(limit: str, maximum: int, estimate: int, what: str) -> None:
    if estimate > maximum:
        raise LimitExceeded(limit, maximum, estimate, what)


def check_sequence_sizes(settings: Settings, batch: int, longest: int) -> None:
    """Batch and sequence length alone: text checks them before it builds any embedding."""
    _check("ATTENTION_MAX_BATCH", settings.max_batch, batch, "batch")
    _check("ATTENTION_MAX_SEQ", settings.max_seq, longest, "sequence length")


def check_limits(settings: Settings, request: AttendRequest, inputs: Inputs, dims: Dims, layers: int = 1) -> None:
    """`layers`: how many times the computation repeats (one per requested layer of a model), each kept."""
    check_sequence_sizes(settings, inputs.batch, max(inputs.seq, inputs.seq_kv))
    _check("ATTENTION_MAX_HEADS", settings.max_heads, dims.num_heads, "num_heads")
    widest = max(inputs.x.shape[2], dims.num_heads * dims.d_k, dims.num_heads * dims.d_v, dims.d_out)
    _check("ATTENTION_MAX_DIM", settings.max_dim, widest, "the widest of d_model, heads*d_k, heads*d_v, d_out")
    shapes = tensor_shapes(inputs, dims)
    returned = layers * sum(_size(shapes[name]) for name in request.returned)
    _check("ATTENTION_MAX_RESPONSE_ELEMENTS", settings.max_response_elements, returned,
           f"numbers in the response ({', '.join(request.returned)})")
    heads, d_model = dims.num_heads, inputs.x.shape[2]
    weights = d_model * heads * (2 * dims.d_k + dims.d_v) + heads * dims.d_v * dims.d_out
    computed = (_size(inputs.x.shape) + _size(inputs.source.shape)
                + layers * (weights + sum(_size(s) for s in shapes.values())))
    _check("ATTENTION_MAX_COMPUTE_ELEMENTS", settings.max_compute_elements, computed,
           "numbers held by the computation (inputs, weights and every internal)")
