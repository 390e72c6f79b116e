"""Dynamic batching: text requests for the same model, with the same options, that reach a compute process
within ATTENTION_BATCH_WINDOW_MS of each other are computed in one forward pass, their texts padded together,
and each gets back its own answer: the tensors of its own texts cut to its own length, its own tokens and meta
(made by its own, unbatched computation: pretrained.py, whose forward pass is never run), its own status.

A forward pass over a dozen tokens is bound by reading the model's weights, not by arithmetic, so eight
requests cost little more than one. What may share a pass: /attend requests (not streamed) whose text goes
through a model that pads on the right, asking for the attention tensors of TENSOR_NAMES and
ROTARY_TENSOR_NAMES, whole or cut to `heads` (not `queries`, summaries, flow, predictions, interventions or
generate, whose sizes and passes depend on the padded length: they are computed alone). The padding is never
visible: a real token's keys are its text's, the extra padding keys are masked (weight exactly 0) and cut
away with the extra padding queries.

Requests that share a pass are consecutive in the order the server sent them (the answers go back in that
order; a pass computed ahead would hold its answers while the requests between are computed), and about as
long (a 12-token request is not padded to the 500 tokens of another: it would pay for them and wait for
them). Together they must fit the limits of one request (the number of texts, the memory of what is held): a
run that does not is halved until each part does. A request that is refused on its own (a 4xx) gets its own
answer and the others their pass; a pass that fails for any other reason is computed again one request at a
time.

Each request keeps its ticket (service/protocol.py): a pass takes its requests' tickets when it starts, so a
request whose client left before is skipped, as one computed alone would be. Time limits: the server kills the
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

from schemas.axes import ROTARY_TENSOR_NAMES, TENSOR_AXES, TENSOR_NAMES
from schemas.request import TOY_MODEL, AttendRequest
from service.compute.dispatch import compute
from service.compute.doors import DOORS
from service.compute.formats.result import Layer, Result
from service.compute.gathering import Requests, Sent
from service.compute.models.registry import ModelRegistry
from service.compute.pipeline import check_text_batch, encoded
from service.compute.stopping import until_stopped
from service.errors import REQUEST_ERRORS
from service.protocol import ATTEND, BATCH_NOTE, Frame, ResponseFormat, Tickets, skipped
from service.settings import Settings

log = logging.getLogger("attention_service.compute")

SHORT_PADDING = 32  # tokens of padding a request may get in a pass whatever its length (see _alike)
SHAREABLE_NAMES = frozenset((*TENSOR_NAMES, *ROTARY_TENSOR_NAMES))
# each tensor's axes of positions (query_pos, key_pos): cut to a request's own padded length
POSITION_AXES: dict[str, tuple[int, ...]] = {
    name: tuple(axis for axis, label in enumerate(axes) if label in ("query_pos", "key_pos"))
    for name, axes in TENSOR_AXES.items()
}


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
    try:
        check_text_batch(sent.body, settings)
        request = AttendRequest.model_validate_json(sent.body)
    except REQUEST_ERRORS:
        return None
    alone = (
        request.text is None
        or request.model == TOY_MODEL
        or request.generate is not None
        or request.predict is not None
        or request.interventions is not None
        or request.queries is not None
        or request.blocked
        or not SHAREABLE_NAMES.issuperset(request.returned)
    )
    return None if alone else request


def gather(first: Sent, requests: Requests, settings: Settings) -> list[Turn]:
    """`first`, and when it may share a forward pass the requests that come within the window after it (up
    to batch_max_requests in all)."""
    if settings.batch_window_ms == 0:
        return [Turn(first, None)]
    turn = Turn(first, shareable(first, settings))
    if turn.request is None:
        return [turn]
    more = requests.within(settings.batch_window_ms / 1000, settings.batch_max_requests - 1)
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
    """A request of a run that is computed (its ticket taken): its own Result, as computed alone (lazily:
    its forward pass runs only if it is read), or why it is refused."""

    turn: Turn
    request: AttendRequest
    result: Result | None = None
    error: Exception | None = None


def _run(turns: list[Turn], tickets: Tickets, settings: Settings, models: ModelRegistry) -> Iterator[Frame]:
    """A run of requests that may share a pass: each skipped, refused on its own, or computed in a pass."""
    answered: dict[int, Frame] = {}  # by position in the run: those that compute nothing
    members: list[Member] = []
    for position, turn in enumerate(turns):
        assert turn.request is not None
        skip = skipped(tickets, turn.sent.number, turn.sent.deadline)
        if skip is not None:
            answered[position] = skip
            continue
        member = Member(turn, turn.request)
        try:
            member.result = compute(turn.request, settings, models, turn.sent.came)
        except Exception as error:  # its own answer says what (pipeline.encoded)
            member.error = error
        members.append(member)
    computing = [member for member in members if member.error is None]
    shares: dict[int, Result] = {}  # by the request's number: its share of a pass of several
    passes = iter(_passes(computing, settings, models))
    next_pass: tuple[list[Member], Result | None] | None = next(passes, None)
    pending = iter(members)
    for position, turn in enumerate(turns):
        if position in answered:
            yield answered[position]
            continue
        member = next(pending)
        if next_pass is not None and next_pass[0][0] is member:  # the first request of a pass: computed now
            group, together = next_pass
            shares = _computed(group, together) if together is not None else {}
            for size in [len(shares)] if shares else [1] * len(group):  # requests per forward pass
                yield BATCH_NOTE, str(size).encode(), True
            next_pass = next(passes, None)
        yield (*_answer(member, shares.pop(turn.sent.number, None)), True)


def _answer(member: Member, share: Result | None) -> tuple[int, bytes]:
    def result() -> Result:
        if member.error is not None:
            raise member.error
        assert member.result is not None
        return share if share is not None else member.result

    return encoded(result, member.turn.sent.media)


def _passes(
    members: list[Member], settings: Settings, models: ModelRegistry
) -> Iterator[tuple[list[Member], Result | None]]:
    """Consecutive groups of `members`, each with the Result of their texts together (lazy: its forward
    pass runs when its layers are read), or None for a request computed alone."""
    for alike in _alike(members):
        yield from _together(alike, settings, models)


def _alike(members: list[Member]) -> Iterator[list[Member]]:
    """Consecutive runs of `members` whose texts are about as long: padded to the longest, none is more than
    twice its own length or SHORT_PADDING tokens longer (a short request does not pay for a long one's
    length, nor wait for it)."""
    run: list[Member] = []
    for member in members:
        lengths = [_length(other) for other in (*run, member)]
        if run and max(lengths) > max(2 * min(lengths), min(lengths) + SHORT_PADDING):
            yield run
            run = []
        run.append(member)
    if run:
        yield run


def _length(member: Member) -> int:
    """The length a request's texts are padded to alone."""
    assert member.result is not None and member.result.tokens is not None
    return len(member.result.tokens[0])


def _together(
    members: list[Member], settings: Settings, models: ModelRegistry
) -> Iterator[tuple[list[Member], Result | None]]:
    """`members` in one pass, or halved until each part fits the limits of one request."""
    if len(members) == 1 or not _pads_on_the_right(members[0].request, settings, models):
        yield from (([member], None) for member in members)
        return
    first = members[0]
    texts = [text for member in members for text in member.request.texts]
    try:
        together = compute(
            first.request.model_copy(update={"text": texts}), settings, models, first.turn.sent.came
        )
    except REQUEST_ERRORS:  # over a limit together
        half = len(members) // 2
        yield from _together(members[:half], settings, models)
        yield from _together(members[half:], settings, models)
        return
    except Exception:  # a bug: each request is computed alone, and says so if it fails the same way
        log.exception("a batched pass could not be prepared; its requests are computed one at a time")
        yield from (([member], None) for member in members)
        return
    yield members, together


def _pads_on_the_right(request: AttendRequest, settings: Settings, models: ModelRegistry) -> bool:
    """Whether the model pads its texts at their end: a request's positions are then the same in a batch
    (a model that pads on the left would shift them)."""
    tokenizer = models.get(request.model or settings.default_model).tokenizer
    return bool(tokenizer.padding_side == "right")


def _computed(group: list[Member], together: Result) -> dict[int, Result]:
    """Each member's Result with its share of the pass `together` (its rows, cut to its own padded length),
    by its number; empty when the pass failed (each is then computed alone, from its own Result)."""
    try:
        layers = list(together.layers or ())
    except Exception:
        log.exception("a batched forward pass failed; its requests are computed one at a time")
        return {}
    shares: dict[int, Result] = {}
    row = 0
    for member in group:
        assert member.result is not None and member.result.tokens is not None
        rows = slice(row, row + len(member.result.tokens))
        length = _length(member)
        share = _share(layers, rows, length)
        shares[member.turn.sent.number] = dataclasses.replace(member.result, layers=share)
        row = rows.stop
    return shares


def _share(layers: list[Layer], rows: slice, length: int) -> list[Layer]:
    """The layers' tensors of the texts `rows`, their positions cut to `length`."""
    shared: list[Layer] = []
    for index, tensors in layers:
        cut = {}
        for name, tensor in tensors.items():
            part = tensor[rows]
            for axis in POSITION_AXES[name]:
                part = part.narrow(axis, 0, length)
            cut[name] = part
        shared.append((index, cut))
    return shared
