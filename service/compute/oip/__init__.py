"""The Open Inference Protocol v2 (KServe / Triton REST) door of a compute process, beside /attend's
(pipeline.py): POST /v2/models/{name}/infer decoded (inputs.py) into the AttendRequest it stands for
(request.py), computed by the same dispatch under the same limits and time limit (dispatch.py), answered as
output tensors (outputs.py). The decoding happens here rather than in the server process so that binary
tensors are read straight into numpy (one copy) and the event loop never touches a tensor."""

from __future__ import annotations

import logging
import time
from typing import Any, NamedTuple

import orjson
from pydantic import ValidationError

from schemas.oip import InferRequestHeader
from schemas.request import AttendRequest
from service.compute.dispatch import compute
from service.compute.limits import check_numbers, check_strings
from service.compute.models.registry import ModelRegistry
from service.compute.oip.inputs import decode_inputs
from service.compute.oip.outputs import oip_body
from service.compute.oip.request import WEIGHT_PARAMETERS, Output, translate
from service.errors import (
    INTERNAL_ERROR,
    InferRequestError,
    LimitExceeded,
    ModelError,
    RequestError,
    describe_validation_errors,
    oip_error_body,
    status_of,
)
from service.protocol import OIP_PRELUDE
from service.settings import Settings

log = logging.getLogger("attention_service.compute")


class InferRequest(NamedTuple):
    """An infer request as the service computes it: the AttendRequest it stands for, and how to answer it."""

    model: str
    request: AttendRequest
    request_id: str | None
    outputs: list[Output] | None  # the requested outputs in order, or None: all
    binary_default: bool
    inputs: frozenset[str]  # the names of its inputs (errors name a field as an input or a parameter)


def _where(loc: list[Any] | tuple[Any, ...], inputs: frozenset[str]) -> str:
    """A location of the /attend request as the infer request names it: an input, or a parameter."""
    parts = [part for part in loc if part != "body"]
    if not parts:
        return "request"
    if parts[0] == "weights" and len(parts) > 1:
        parts = parts[1:]
        if parts[0] in WEIGHT_PARAMETERS:
            return f"parameters.{parts[0]}"
    head, rest = str(parts[0]), "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts[1:])
    return f"input {head!r}{rest}" if head in inputs else f"parameters.{head}{rest}"


def decode(envelope: bytes, settings: Settings) -> InferRequest:
    """An OIP_INFER request (service/protocol.py: OIP_PRELUDE, the model name, the body) as the request it
    stands for; raises InferRequestError for one that does not fit, LimitExceeded for one over a limit."""
    header_length, name_length = OIP_PRELUDE.unpack_from(envelope)
    model = envelope[OIP_PRELUDE.size : OIP_PRELUDE.size + name_length].decode()
    body = memoryview(envelope)[OIP_PRELUDE.size + name_length :]
    if header_length > len(body):  # the server checked it; never read past the body
        raise InferRequestError(
            f"the JSON header's length {header_length} exceeds the body's {len(body)} bytes"
        )
    check_strings(settings, body[:header_length])  # a BYTES bomb is refused before the parser sees it
    check_numbers(settings, body[:header_length])  # and a bomb of JSON data
    try:
        header = InferRequestHeader.model_validate(orjson.loads(body[:header_length]))
    except orjson.JSONDecodeError as error:
        raise InferRequestError(f"the JSON header is not valid JSON: {error}") from None
    except ValidationError as error:
        found = describe_validation_errors(error.errors(include_url=False), prefix=())
        raise InferRequestError(
            "; ".join(f"{'.'.join(map(str, e['loc'])) or 'header'}: {e['msg']}" for e in found)
        ) from None
    inputs = decode_inputs(header.inputs, body[header_length:], settings)
    names = frozenset(inputs)
    translated = translate(header, model, inputs)
    try:
        request = AttendRequest.model_validate(translated.fields)
    except ValidationError as error:
        found = describe_validation_errors(error.errors(include_url=False), prefix=())
        raise InferRequestError("; ".join(f"{_where(e['loc'], names)}: {e['msg']}" for e in found)) from None
    return InferRequest(model, request, header.id, translated.outputs, translated.binary_default, names)


def _infer(envelope: bytes, settings: Settings, models: ModelRegistry) -> bytes:
    started = time.perf_counter()
    infer = decode(envelope, settings)
    try:
        result = compute(infer.request, settings, models, started)
        return oip_body(result, infer.model, infer.request_id, infer.outputs, infer.binary_default)
    except RequestError as error:
        raise InferRequestError(f"{_where(error.loc, infer.inputs)}: {error.msg}") from None


def answer_infer(envelope: bytes, settings: Settings, models: ModelRegistry) -> tuple[int, bytes]:
    """The HTTP status and body for an OIP_INFER request (service/protocol.py): 200 with OIP_ANSWER before
    the response, or the protocol's error body with the status of service/errors.py: 400 for a request that
    does not fit, 413 over a limit, 503 for a model that cannot be served."""
    try:
        return 200, _infer(envelope, settings, models)
    except (InferRequestError, LimitExceeded, ModelError) as error:
        return status_of(error).code, oip_error_body(str(error))
    except Exception:  # a bug or an exhausted resource: logged, a 500 for the request, the process goes on
        log.exception("OIP inference failed")
        return 500, oip_error_body(INTERNAL_ERROR)
