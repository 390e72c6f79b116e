"""Dynamic batching: text requests for the same model, with the same options, that reach a compute process
within ATTENTION_BATCH_WINDOW_MS of each other are computed in one forward pass, their texts padded together,
and each gets back its own answer: the tensors of its own texts cut to its own length, its own tokens and meta
(made by its own, unbatched computation: pretrained.py, whose forward pass is never run), its own status.

A forward pass over a dozen tokens is bound by reading the model's weights, not by arithmetic, so eight
requests cost little more than one. What may share a pass: /attend requests (not streamed) whose text goes
through a model that pads on the right, asking for the attention tensors of TENSOR_NAMES and
ROTARY_TENSOR_NAMES, whole or cut to `heads`, and the summaries of SUMMARY_NAMES (whose sums count a text's
own tokens, and whose ranks and pooled blocks are cut to the request's own; a default pool that would differ
at the padded length keeps a request out of the pass), with `predict` and `interventions` too (the same
interventions for every text of the pass, as for every text of one request: positions below each request's
own length, checked alone; each request gets its texts' rows of the top-level sections, every text predicted
at as many positions). Not `queries`, flow, generate or a `patch` intervention: they are computed alone.
The padding is never visible: a real token's keys are its text's, the extra padding keys are masked (weight
exactly 0), and each tensor is cut to its shape in the request's answer alone (meta's shapes).

Requests that share a pass are consecutive in the order the server sent them (the answers go back in that
order; a pass computed ahead would hold its answers while the requests between are computed), and about as
long (a 12-token request is not padded to the 500 tokens of another: it would pay for them and wait for
them). Together they must fit the limits of one request (the number of texts, the memory of what is held): a
run that does not is halved until each part does. A request that is refused on its own (a 4xx) gets its own
answer and the others their pass; a pass that fails for any other reason is computed again one request at a
time.

Each request keeps its ticket (service/protocol.py): a pass takes its requests' tickets when it starts, so a
request whose client left before is skipped, as one computed alone would be, and the pass is computed without
it; the tickets a process holds are those of the requests it computes now (the server counts them as one
place: compute_pool.py). Time limits: the server kills the
process computing the first request it sent once that request's deadline passes (compute_pool.py); the other
requests of that pass, not answered, go back to the server's queue and are computed again by another process
within what is left of their own time; none fails because another ran out of time.

Before the answers of a pass the process sends a BATCH_NOTE frame with the number of requests it computed
(one for a request that could have shared a pass and went alone): the server's /metrics histogram
attention_batch_size.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

from torch import Tensor

from schemas.axes import ROTARY_TENSOR_NAMES, SUMMARY_NAMES, TENSOR_NAMES
from schemas.request import TOY_MODEL, AttendRequest
from service.compute.dispatch import compute
from service.compute.doors import DOORS
from service.compute.formats.result import Layer, Result
from service.compute.gathering import Requests, Sent
from service.compute.models.registry import ModelRegistry
from service.compute.pipeline import check_text_batch, encoded_frames
from service.compute.stopping import until_stopped
from service.compute.summaries import default_pool
from service.errors import REQUEST_ERRORS
from service.protocol import ATTEND, BATCH_NOTE, Frame, ResponseFormat, Tickets, skipped
from service.settings import Settings

log = logging.getLogger("attention_service.compute")

SHORT_PADDING = 32  # tokens of padding a request may get in a pass whatever its length (see _alike)
# the tensors a pass computes row by row, each text's rows as alone once cut to its own shape: the attention
# tensors, and the summaries, whose sums and ranks count a text's own tokens only (its masks)
SHAREABLE_NAMES = frozenset((*TENSOR_NAMES, *ROTARY_TENSOR_NAMES, *SUMMARY_NAMES))


@dataclass(frozen=True)
class Turn:
    """A request read from the socket, with its parsed request when it may share a forward pass."""

    sent: Sent
    request: AttendRequest | None

    def key(self, settings: Settings) -> str | None:
        """Equal for the requests that may share a pass: the model and every option but the texts."""
        if self.request is None:
            return None
        model = self.request.model or settings.default_model
        return model + self.request.model_dump_json(exclude={"text", "model"})


def shareable(sent: Sent, settings: Settings) -> AttendRequest | None:
    """The request `sent` holds, when it may share a forward pass with others; None otherwise (including a
    request that cannot be parsed: its own door answers what is wrong with it)."""
    if sent.kind != ATTEND or sent.media == ResponseFormat.NDJSON:
        return None
    if b'"text"' not in sent.body:  # no text, no pass to share: spares small requests a second parse (a key
        return None  # written with escapes is only computed alone, as before)
    try:
        check_text_batch(sent.body, settings)
        request = AttendRequest.model_validate_json(sent.body)
    except REQUEST_ERRORS:
        return None
    alone = (
        request.text is None
        or request.model == TOY_MODEL
        or request.generate is not None
        or request.queries is not None
        # a patch's source is computed as its request is prepared, before its ticket is taken (_prepared)
        or any(intervention.patch is not None for intervention in request.interventions or ())
        or not SHAREABLE_NAMES.issuperset(request.returned)
    )
    return None if alone else request


def gather(first: Sent, requests: Requests, settings: Settings) -> list[Turn]:
    """`first`, and when it may share a forward pass the requests that come within the window after it (up
    to batch_max_requests in all). A request that was alone in the service when it was sent (no company)
    waits for nobody: the requests already sent after it are taken, the window is not waited (a single
    client's requests, one at a time, would each wait it for a pass that cannot form)."""
    if settings.batch_window_ms == 0:
        return [Turn(first, None)]
    turn = Turn(first, shareable(first, settings))
    if turn.request is None:
        return [turn]
    window = settings.batch_window_ms / 1000 if first.company else 0.0
    more = requests.within(window, settings.batch_max_requests - 1)
    return [turn, *(Turn(sent, shareable(sent, settings)) for sent in more)]


def answers(
    turns: list[Turn], tickets: Tickets, settings: Settings, models: ModelRegistry
) -> Iterator[Frame]:
    """The frames of the answers to `turns`, in their order: runs of requests that may share a pass computed
    together, the others through their door as if alone."""
    start = 0
    while start < len(turns):
        key = turns[start].key(settings)
        end = start + 1
        while end < len(turns) and key is not None and turns[end].key(settings) == key:
            end += 1
        if key is None:
            yield from _alone(turns[start].sent, tickets, settings, models)
        else:
            yield from _run(turns[start:end], tickets, settings, models)
        start = end


def _alone(sent: Sent, tickets: Tickets, settings: Settings, models: ModelRegistry) -> Iterator[Frame]:
    skip = skipped(tickets, sent.number, sent.deadline)
    if skip is not None:
        yield skip
        return
    frames = DOORS[sent.kind](sent.body, settings, models, sent.media, False)
    # a stream whose client left or stopped reading is stopped between two lines (stopping.py)
    yield from until_stopped(frames, tickets, sent.number)


@dataclass
class Member:
    """A request of a run, prepared before its ticket is taken: its own Result, as computed alone (lazily:
    tokens and checks only, its forward pass runs only if its layers are read), or why it is refused."""

    turn: Turn
    request: AttendRequest
    result: Result | None = None
    error: Exception | None = None


def _prepared(turn: Turn, settings: Settings, models: ModelRegistry) -> Member:
    assert turn.request is not None
    member = Member(turn, turn.request)
    try:
        member.result = compute(turn.request, settings, models, turn.sent.came)
    except Exception as error:  # its own answer says what (pipeline.encoded_frames)
        member.error = error
    return member


def _run(turns: list[Turn], tickets: Tickets, settings: Settings, models: ModelRegistry) -> Iterator[Frame]:
    """A run of requests that may share a pass, in parts that fit one pass each. A part's tickets are taken
    when it is computed, not before: a request whose client left while the parts before it were computed is
    skipped, and the pass is computed without it; and the requests whose tickets a process holds are those it
    computes now, which the server counts as one place (compute_pool.py)."""
    members = [_prepared(turn, settings, models) for turn in turns]
    for part, together in _parts(members, settings, models):
        skips: dict[int, Frame] = {}  # by the request's number: those not computed
        for member in part:
            skip = skipped(tickets, member.turn.sent.number, member.turn.sent.deadline)
            if skip is not None:
                skips[member.turn.sent.number] = skip
        present = [m for m in part if m.turn.sent.number not in skips and m.error is None]
        if skips:  # computed without those skipped (`together` never holds the refused)
            together = None
        shares = _computed(present, together, settings, models) if len(present) > 1 else {}
        for size in [len(shares)] if shares else [1] * len(present):  # requests per forward pass
            yield BATCH_NOTE, str(size).encode(), True
        for member in part:
            number = member.turn.sent.number
            skip = skips.get(number)
            if skip is not None:
                yield skip
            else:
                yield from _answer(member, shares.get(number))


def _answer(member: Member, share: Result | None) -> Iterator[Frame]:
    def result() -> Result:
        if member.error is not None:
            raise member.error
        assert member.result is not None
        return share if share is not None else member.result

    return encoded_frames(result, member.turn.sent.media)


def _parts(
    members: list[Member], settings: Settings, models: ModelRegistry
) -> Iterator[tuple[list[Member], Result | None]]:
    """`members` in consecutive parts: runs of those not refused whose texts are about as long (_alike), in
    parts that fit the limits of one request together (_fitting), each with the Result of their texts together
    when there are several. A refused request rides in the part beside it, answered in its place: it computes
    nothing, and does not split the requests around it into passes of their own."""
    accepted = [member for member in members if member.error is None]
    parts = [part for alike in _alike(accepted) for part in _fitting(alike, settings, models)]
    if not parts:
        yield members, None
        return
    part_of = {id(member): index for index, (part, _) in enumerate(parts) for member in part}
    placed: list[list[Member]] = [[] for _ in parts]
    index = 0
    for member in members:  # in their order: a refused one goes with the part of the request before it
        index = part_of.get(id(member), index)
        placed[index].append(member)
    yield from ((placed[index], together) for index, (_, together) in enumerate(parts))


def _alike(members: list[Member]) -> Iterator[list[Member]]:
    """Consecutive runs of `members` whose texts are about as long: padded to the longest, none is more than
    twice its own length or SHORT_PADDING tokens longer (a short request does not pay for a long one's
    length, nor wait for it), and the default pool of pooled_weights is each one's own."""
    run: list[Member] = []
    for member in members:
        lengths = [_length(other) for other in (*run, member)]
        padded = max(lengths) > max(2 * min(lengths), min(lengths) + SHORT_PADDING)
        if run and (padded or not _same_pool(member.request, lengths)):
            yield run
            run = []
        run.append(member)
    if run:
        yield run


def _same_pool(request: AttendRequest, lengths: list[int]) -> bool:
    """Whether texts of these lengths, padded to the longest, get the pool each gets alone: the default pool
    grows with the length (summaries.default_pool)."""
    if "pooled_weights" not in request.summaries or request.pool is not None:
        return True
    return len({default_pool(length, length) for length in (*lengths, max(lengths))}) == 1


def _length(member: Member) -> int:
    """The length a request's texts are padded to alone."""
    assert member.result is not None and member.result.tokens is not None
    return len(member.result.tokens[0])


def _fitting(
    members: list[Member], settings: Settings, models: ModelRegistry
) -> Iterator[tuple[list[Member], Result | None]]:
    """`members` as one part with the Result of their texts together (lazy: its forward pass runs when its
    layers are read), or halved until each part fits the limits of one request (each alone when they cannot
    share a pass)."""
    if len(members) == 1 or not _pads_on_the_right(members[0].request, settings, models):
        yield from (([member], None) for member in members)
        return
    try:
        together = _together(members, settings, models)
    except REQUEST_ERRORS:  # over a limit together
        half = len(members) // 2
        yield from _fitting(members[:half], settings, models)
        yield from _fitting(members[half:], settings, models)
        return
    except Exception:  # a bug: each request is computed alone, and says so if it fails the same way
        log.exception("a batched pass could not be prepared; its requests are computed one at a time")
        yield from (([member], None) for member in members)
        return
    yield members, together


def _together(members: list[Member], settings: Settings, models: ModelRegistry) -> Result:
    """The Result of the texts of `members` as one request (lazy: its forward pass runs when its layers are
    read)."""
    first = members[0]
    texts = [text for member in members for text in member.request.texts]
    return compute(first.request.model_copy(update={"text": texts}), settings, models, first.turn.sent.came)


def _pads_on_the_right(request: AttendRequest, settings: Settings, models: ModelRegistry) -> bool:
    """Whether the model pads its texts at their end: a request's positions are then the same in a batch
    (a model that pads on the left would shift them)."""
    tokenizer = models.get(request.model or settings.default_model).tokenizer
    return bool(tokenizer.padding_side == "right")


def _computed(
    group: list[Member], together: Result | None, settings: Settings, models: ModelRegistry
) -> dict[int, Result]:
    """Each member's Result with its share of the forward pass over all their texts, `together` (made here
    when None), computed now: its rows, cut to its shapes alone, by its number; empty when the pass
    failed (each is then computed alone, from its own Result)."""
    try:
        computed = together or _together(group, settings, models)
        layers = list(computed.layers or ())
        sections = computed.sections() if computed.sections is not None else None  # once the pass has run
        shares: dict[int, Result] = {}
        row = 0
        for member in group:
            assert member.result is not None and member.result.tokens is not None
            assert member.result.shapes is not None  # a model's Result (pretrained.py)
            rows = slice(row, row + len(member.result.tokens))
            shapes = member.result.shapes()  # those of its answer alone, without building its meta twice
            share = _share(layers, rows, shapes)
            own = None if sections is None else partial(_rows_of, sections, rows, shapes)
            shares[member.turn.sent.number] = dataclasses.replace(member.result, layers=share, sections=own)
            row = rows.stop
    except Exception:  # a subset of a part that fitted fits: a bug, or the pass itself failed
        log.exception("a batched forward pass failed; its requests are computed one at a time")
        return {}
    return shares


def _rows_of(sections: dict[str, Any], rows: slice, shapes: dict[str, list[int]]) -> dict[str, Any]:
    """The top-level sections of the texts `rows`: `predictions` and `predictions_clean` (each of their
    tensors and lists has a text per row, and as many positions for every text), `output_similarity` (a text
    per row, cut to its shape alone)."""
    own: dict[str, Any] = {}
    for name, section in sections.items():
        if isinstance(section, dict):
            own[name] = {key: value[rows] for key, value in section.items()}
        else:
            own[name] = _cut(name, section[rows], shapes[name])
    return own


def _share(layers: list[Layer], rows: slice, shapes: dict[str, list[int]]) -> list[Layer]:
    """The layers' tensors of the texts `rows`, each cut to its shape in the answer of those texts alone
    (their positions, and the summaries' ranks and pooled blocks, which follow the padded length)."""
    return [
        (index, {name: _cut(name, tensor[rows], shapes[name]) for name, tensor in tensors.items()})
        for index, tensors in layers
    ]


def _cut(name: str, part: Tensor, shape: list[int]) -> Tensor:
    """`part`, a request's rows of a tensor of the pass, cut to `shape`, its shape in the answer alone."""
    for axis, length in enumerate(shape[1:], start=1):
        part = part.narrow(axis, 0, length)
    if list(part.shape) != shape:
        raise ValueError(f"{name}: a share of {list(part.shape)}, alone {shape}")
    return part
