"""The /attend door of a compute process, bytes to bytes: the body parsed into schemas.request.AttendRequest
(pydantic-core's JSON parser; tensor fields become numpy arrays), computed by dispatch.py (as the Open
Inference Protocol's door, oip/, does), then written in the format the client accepts (formats/); errors in
the request become their 4xx answer (service/errors.py).
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterator

import orjson

from schemas.request import AttendRequest
from service.compute.dispatch import compute
from service.compute.formats.json_body import json_body, json_pieces
from service.compute.formats.ndjson import ndjson_lines
from service.compute.formats.result import Result
from service.compute.formats.safetensors_body import safetensors_body
from service.compute.limits import check_batch, check_numbers, check_strings
from service.compute.models.registry import ModelRegistry
from service.errors import (
    INTERNAL_ERROR,
    REQUEST_ERRORS,
    detail_answer,
    detail_body,
    status_of,
    stream_error_line,
)
from service.protocol import Frame, ResponseFormat
from service.settings import Settings

log = logging.getLogger("attention_service.compute")

LARGE_BODY_BYTES = 2**18  # a list of texts in a body this large may be a batch bomb: counted first
# a stream's frames (and a large JSON answer's) are about this long: a layer's line of 40 MB goes in pieces
PIECE = 2**20
INTERNAL_ERROR_BODY = orjson.dumps({"detail": INTERNAL_ERROR})


def check_text_batch(body: bytes, settings: Settings) -> None:
    """A large body's list of texts, counted before pydantic builds it: pydantic makes a Python object of each
    string first (300 ms for a million one-character texts) only to refuse them. A body of more strings than
    a request can hold is refused from its quotes; otherwise its texts are counted from orjson's parse (fast
    for a body of few strings)."""
    if len(body) < LARGE_BODY_BYTES:
        return
    check_strings(settings, body)
    check_numbers(settings, body)  # and a number bomb
    if b'"text"' not in body:
        return
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return  # pydantic says where
    texts = parsed.get("text") if isinstance(parsed, dict) else None
    if isinstance(texts, list):
        check_batch(settings, len(texts))


def computed(body: bytes, settings: Settings, models: ModelRegistry, streamed: bool = False) -> Result:
    """What the request body asks for, computed (a model's layers as they are read); raises one of
    REQUEST_ERRORS for a request that cannot be served. `streamed`: the answer is sent a layer at a time."""
    started = time.perf_counter()
    check_text_batch(body, settings)
    request = AttendRequest.model_validate_json(body)
    return compute(request, settings, models, started, streamed)


def attend(body: bytes, settings: Settings, models: ModelRegistry) -> bytes:
    """The JSON response to a request body; raises one of REQUEST_ERRORS for a request that cannot be
    served."""
    return json_body(computed(body, settings, models))


ONE_PIECE = {ResponseFormat.JSON: json_body, ResponseFormat.SAFETENSORS: safetensors_body}


def answer(
    body: bytes, settings: Settings, models: ModelRegistry, media: ResponseFormat = ResponseFormat.JSON
) -> tuple[int, bytes]:
    """The HTTP status and body for a request body in a format sent in one piece (JSON, safetensors): 200, a
    4xx that says what is wrong (as JSON), or a 500 for a bug."""
    return encoded(lambda: computed(body, settings, models), media)


def encoded(result: Callable[[], Result], media: ResponseFormat) -> tuple[int, bytes]:
    """`answer` of the result `result()` computes (a batch's share of a forward pass: batching.py)."""
    try:
        return 200, ONE_PIECE[media](result())
    except REQUEST_ERRORS as error:
        return detail_answer(error)
    except Exception:  # a bug or an exhausted resource: logged, a 500 for the request, the process goes on
        log.exception("computation failed")
        return 500, INTERNAL_ERROR_BODY


def frames(
    body: bytes, settings: Settings, models: ModelRegistry, media: ResponseFormat, joined: bool = False
) -> Iterator[Frame]:
    """The frames of the answer (service/protocol.py), each made when the one before has been sent: for
    JSON and safetensors those of `encoded_frames`; for NDJSON the first line, each further line as soon as
    it is computed (in frames of at most PIECE bytes), and an empty last frame. An error before the first
    frame is the answer (a 4xx or 500 as JSON); after it, the stream's last line
    (service/compute/formats/ndjson.py). `joined`: the frames are held together before they are sent (a Ray
    replica), so the limits count the whole stream."""
    if media != ResponseFormat.NDJSON:
        yield from encoded_frames(lambda: computed(body, settings, models), media, joined)
        return
    yield from _in_order(lambda: ndjson_lines(computed(body, settings, models, streamed=not joined)), False)


def encoded_frames(
    result: Callable[[], Result], media: ResponseFormat, joined: bool = False
) -> Iterator[Frame]:
    """The frames of `encoded`'s answer: one for safetensors and for a JSON answer of at most PIECE bytes; a
    larger JSON answer in frames of about PIECE bytes as it is written, so that neither process holds it
    whole (148 MB at 16k tokens with every summary of every layer), then an empty last frame. Its last
    frame's status, other than 200, tells the server that it broke off (the frame holds the stream's error
    line, which JSON cannot carry: the server closes the connection with the answer unfinished). `joined`:
    the frames are held together anyway (a Ray replica), so JSON is one frame."""
    if media == ResponseFormat.SAFETENSORS or joined:
        yield (*encoded(result, media), True)
        return
    yield from _in_order(lambda: _in_frames(json_pieces(result())), True)


def _in_order(pieces_of: Callable[[], Iterator[bytes]], whole_if_one: bool) -> Iterator[Frame]:
    """The frames of the answer whose pieces `pieces_of()` makes: the first piece with the status (or the
    error, as the whole answer), then each piece (a stream's lines cut to PIECE bytes), then an empty last
    frame, or the stream's error line as the last. `whole_if_one`: an answer of one piece is one frame (the
    second piece is made before the first is sent: a JSON answer, whose every layer is computed by then)."""
    try:
        pieces = pieces_of()
        first = next(pieces)
        second = next(pieces, None) if whole_if_one else None
    except REQUEST_ERRORS as error:
        yield (*detail_answer(error), True)
        return
    except Exception:
        log.exception("computation failed")
        yield 500, INTERNAL_ERROR_BODY, True
        return
    if whole_if_one and second is None:
        yield 200, first, True
        return
    yield 200, first, False
    rest = pieces if whole_if_one else _cut(pieces)
    if second is not None:
        rest = itertools.chain((second,), rest)
    del first, second
    try:
        for piece in rest:
            yield 200, piece, False
            del piece  # not held while the next piece is made
    except REQUEST_ERRORS as error:
        status = status_of(error).code
        yield status, stream_error_line(status, detail_body(error)), True
        return
    except Exception:
        log.exception("computation failed")
        yield 500, stream_error_line(500, {"detail": INTERNAL_ERROR}), True
        return
    yield 200, b"", True


def _cut(lines: Iterator[bytes]) -> Iterator[bytes]:
    """A stream's lines after its first, each cut in pieces of at most PIECE bytes: the server reads a piece
    at a time, not a layer."""
    for line in lines:
        for offset in range(0, len(line), PIECE):
            yield line[offset : offset + PIECE]
        del line  # not held while the next line is computed


def _in_frames(pieces: Iterator[bytes | memoryview]) -> Iterator[bytes]:
    """Pieces joined into frames of about PIECE bytes (the last one shorter), each made when asked for."""
    waiting: list[bytes | memoryview] = []
    size = 0
    for piece in pieces:
        waiting.append(piece)
        size += len(piece)
        if size >= PIECE:
            yield b"".join(waiting)
            waiting, size = [], 0
    if waiting:
        yield b"".join(waiting)
