"""Size limits, decided from Sizes alone before any tensor is allocated (413 with the limit and the
estimate)."""

from __future__ import annotations

from collections.abc import Iterable

from schemas.axes import SQUARE_TENSOR_NAMES, SUMMARY_NAMES, TENSOR_NAMES, TensorName
from service.compute.blocked import BLOCK_COPIES, rows_per_block
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


def check_sequence_sizes(settings: Settings, batch: int, longest: int, blocked: bool = False) -> None:
    """Batch and sequence length alone: text checks them before it builds any embedding. `blocked`: the
    request is computed in blocks of queries (summaries only), whose default bound is higher."""
    check_batch(settings, batch)
    what = "sequence length" + (" (computed in blocks of queries)" if blocked else "")
    _check("ATTENTION_MAX_SEQ", settings.longest_sequence(blocked), longest, what)


def check_value_zeroing(settings: Settings, work: int) -> None:
    """Value zeroing's runs (service/compute/models/flow.py value_zeroing_work): checked before any."""
    _check(
        "ATTENTION_MAX_VALUE_ZEROING_ELEMENTS",
        settings.max_value_zeroing_elements,
        work,
        "numbers computed by value zeroing (one run of the layer per text and key, for each layer)",
    )


def check_limits(
    settings: Settings,
    sizes: Sizes,
    returned: Iterable[TensorName],
    selection: Selection = EVERYTHING,
    streamed: bool = False,
    blocked: bool = False,
    held_layers: int | None = None,
    also_held: int = 0,
) -> None:
    """The limits of a computation, from its sizes. The response counts only what is returned (`returned`,
    cut to `selection`). A stream (`streamed`) holds and sends one layer at a time: its limits apply to each
    layer. A computation in blocks of queries (`blocked`) holds one layer's internals without the
    [query_pos, key_pos] matrices, one block of scores, and each layer's summaries. `held_layers`: the
    layers whose internals are held together when not streamed, if more than those returned (a rollout's);
    `also_held`: numbers held beyond the internals (the flow tensors: rollout, norms, value zeroing's
    runs)."""
    returned = tuple(returned)
    check_sequence_sizes(settings, sizes.batch, max(sizes.seq, sizes.seq_kv), blocked)
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
    summaries = sum(sizes.elements(name) for name in returned if name in SUMMARY_NAMES)
    if blocked:
        one_layer = sum(sizes.elements(name) for name in TENSOR_NAMES if name not in SQUARE_TENSOR_NAMES)
        rows = min(sizes.seq, rows_per_block(sizes.batch, sizes.num_heads, sizes.seq_kv))
        block = sizes.batch * sizes.num_heads * sizes.seq_kv * rows
        held = inputs + layers * (sizes.weight_elements + summaries) + one_layer + BLOCK_COPIES * block
        what = "inputs, weights, one layer's internals, one block of scores, the summaries"
    else:
        internals = sum(sizes.elements(name) for name in TENSOR_NAMES)
        held_together = 1 if streamed else held_layers or sizes.layers
        held = inputs + held_together * (sizes.weight_elements + internals + summaries) + also_held
        what = "inputs, weights and every internal" + (
            ", and the runs of value zeroing" if "value_zeroing" in returned else ""
        )
    _check(
        "ATTENTION_MAX_COMPUTE_ELEMENTS",
        settings.max_compute_elements,
        held,
        f"numbers held by the computation ({what}{' of one layer' if streamed else ''})",
    )
