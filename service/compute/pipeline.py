"""One request, bytes to bytes, in a compute process: the body parsed into schemas.request.AttendRequest
(pydantic-core's JSON parser; tensor fields become numpy arrays), then the explicit and toy path
(explicit.py) or the pretrained path (pretrained.py); errors in the request become their 4xx answer."""

from __future__ import annotations

import logging
import time

import orjson

from schemas.request import TOY_MODEL, AttendRequest
from service.compute.encoding import Encoder, encode
from service.compute.explicit import attend_explicit
from service.compute.limits import check_batch
from service.compute.models.registry import ModelRegistry
from service.compute.pretrained import attend_pretrained
from service.errors import REQUEST_ERRORS, error_answer
from service.settings import Settings

log = logging.getLogger("attention_service.compute")

LARGE_BODY_BYTES = 2**18  # a list of texts in a body this large may be a batch bomb: counted first
INTERNAL_ERROR = b'{"detail": "the computation failed unexpectedly; the service log has the details"}'


def check_text_batch(body: bytes, settings: Settings) -> None:
    """A large body's list of texts, counted from orjson's parse before pydantic builds it: pydantic makes
    a Python object of each string first (300 ms for a million one-character texts) only to refuse them."""
    if len(body) < LARGE_BODY_BYTES or b'"text"' not in body:
        return
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return  # pydantic says where
    texts = parsed.get("text") if isinstance(parsed, dict) else None
    if isinstance(texts, list):
        check_batch(settings, len(texts))


def attend(body: bytes, settings: Settings, models: ModelRegistry) -> bytes:
    """The JSON response to a request body; raises one of REQUEST_ERRORS for a request that cannot be
    served."""
    started = time.perf_counter()
    check_text_batch(body, settings)
    request = AttendRequest.model_validate_json(body)
    return attend_request(request, settings, models, started)


def attend_request(
    request: AttendRequest,
    settings: Settings,
    models: ModelRegistry,
    started: float,
    encoder: Encoder = encode,
) -> bytes:
    """A parsed request through its path; `encoder` writes the response (JSON for /attend, the Open Inference
    Protocol's tensors for service/compute/oip.py)."""
    if request.text is not None and request.model != TOY_MODEL:
        return attend_pretrained(request, settings, models, started, encoder)
    return attend_explicit(request, settings, started, encoder)


def answer(body: bytes, settings: Settings, models: ModelRegistry) -> tuple[int, bytes]:
    """The HTTP status and JSON body for a request body: 200, a 4xx that says what is wrong, or a 500 for a
    bug."""
    try:
        return 200, attend(body, settings, models)
    except REQUEST_ERRORS as error:
        status, detail = error_answer(error)
        return status, orjson.dumps(detail)
    except (
        Exception
    ):  # a bug or an exhausted resource: logged here, a 500 for the request, the process goes on
        log.exception("computation failed")
        return 500, INTERNAL_ERROR
