"""Size limits, decided from Sizes alone before any tensor is allocated (413 with the limit and the
estimate)."""

from __future__ import annotations

from collections.abc import Iterable

from schemas.axes import TENSOR_NAMES, TensorName
from service.compute.sizes import Sizes
from service.compute.slicing import EVERYTHING, Selection
from service.errors import LimitExceeded
from service.settings import Settings


def _check(limit: str, maximum: int, estimate: int, what: str) -> None:
    if estimate > maximum:
        raise LimitExceeded(limit, maximum, estimate, what)


def check_batch(settings: Settings, batch: int) -> None:
    """The number of texts: checked before any text is read."""
    _check("ATTENTION_MAX_BATCH", settings.max_batch, batch, "batch")


# far more than the strings a valid request holds besides its texts (keys, names in include, enum values, OIP
# output names): a body with more strings than the batch and these is a batch bomb
OTHER_STRINGS = 4096


def check_strings(settings: Settings, body: bytes | memoryview) -> None:
    """A JSON body's strings, counted at C speed before any parser makes an object of each (a million
    one-character texts cost a parser 125 ms, this 10 ms): at least half its quotes less its escaped quotes
    (`\\"`), since each string has two quotes of its own and a quote inside one is escaped."""
    raw = bytes(body) if isinstance(body, memoryview) else body
    quotes = raw.count(b'"')  # 1 ms per MB; the escaped ones are counted only when these are too many
    if quotes // 2 - OTHER_STRINGS <= settings.max_batch:
        return
    strings = (quotes - raw.count(b'\\"')) // 2
    if strings - OTHER_STRINGS > settings.max_batch:
        raise LimitExceeded(
            "ATTENTION_MAX_BATCH",
            settings.max_batch,
            strings,
            "batch, counted as the body's strings (a request holds its texts and fewer than "
            f"{OTHER_STRINGS:,} other strings)",
        )


def check_numbers(settings: Settings, body: bytes | memoryview) -> None:
    """A JSON body's numbers, bounded at C speed before any parser makes an object of each (a 32 MB list of
    zeros costs a parser 1.4 GB and 3 s): in a list of n numbers n - 1 commas separate them, so the commas
    (plus one per list, which the strings' and objects' commas more than cover) bound the numbers."""
    commas = (bytes(body) if isinstance(body, memoryview) else body).count(b",")
    if commas - OTHER_STRINGS - settings.max_batch > settings.max_request_numbers:
        raise LimitExceeded(
            "ATTENTION_MAX_REQUEST_NUMBERS",
            settings.max_request_numbers,
            commas,
            "numbers, counted as the body's commas",
        )


def check_sequence_sizes(settings: Settings, batch: int, longest: int) -> None:
    """Batch and sequence length alone: text checks them before it builds any embedding."""
    check_batch(settings, batch)
    _check("ATTENTION_MAX_SEQ", settings.max_seq, longest, "sequence length")


def check_limits(
    settings: Settings,
    sizes: Sizes,
    returned: Iterable[TensorName],
    selection: Selection = EVERYTHING,
    streamed: bool = False,
) -> None:
    """The limits of a computation, from its sizes. The response counts only what is returned (`returned`,
    cut to `selection`). A stream (`streamed`) holds and sends one layer at a time: its limits apply to each
    layer."""
    returned = tuple(returned)
    check_sequence_sizes(settings, sizes.batch, max(sizes.seq, sizes.seq_kv))
    _check("ATTENTION_MAX_HEADS", settings.max_heads, sizes.num_heads, "num_heads")
    widest = max(sizes.input_width, sizes.num_heads * sizes.d_k, sizes.num_heads * sizes.d_v, sizes.d_out)
    _check(
        "ATTENTION_MAX_DIM", settings.max_dim, widest, "the widest of d_model, heads*d_k, heads*d_v, d_out"
    )
    layers = 1 if streamed else sizes.layers
    in_response = layers * sum(selection.elements(sizes, name) for name in returned)
    _check(
        "ATTENTION_MAX_RESPONSE_ELEMENTS",
        settings.max_response_elements,
        in_response,
        f"numbers in the response ({', '.join(returned)}{', each line' if streamed else ''})",
    )
    inputs = sizes.batch * (sizes.seq + sizes.seq_kv) * sizes.input_width
    internals = sum(sizes.elements(name) for name in TENSOR_NAMES)
    held = inputs + layers * (sizes.weight_elements + internals)
    _check(
        "ATTENTION_MAX_COMPUTE_ELEMENTS",
        settings.max_compute_elements,
        held,
        "numbers held by the computation (inputs, weights and every internal"
        f"{' of one layer' if streamed else ''})",
    )
