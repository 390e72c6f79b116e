"""The Open Inference Protocol v2 (KServe / Triton REST) in a compute process: POST /v2/models/{name}/infer
as the /attend request it stands for, through the same pipeline, limits and time limit, answered as output
tensors. The conversion happens here rather than in the server process so that binary tensors are read
straight into numpy (one copy) and the event loop never touches a tensor."""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
from pydantic import ValidationError

from schemas.oip import ATTENTION_MODEL, InferRequestHeader
from schemas.request import TOY_MODEL, AttendRequest
from service.compute.limits import check_numbers, check_strings
from service.compute.models.registry import ModelRegistry
from service.compute.oip.inputs import OipError, decode_inputs
from service.compute.oip.outputs import oip_body
from service.compute.oip.request import WEIGHT_PARAMETERS, translate
from service.compute.pipeline import attend_request
from service.errors import LimitExceeded, ModelError, RequestError, describe_validation_errors
from service.protocol import OIP_PRELUDE
from service.settings import Settings

log = logging.getLogger("attention_service.compute")


def error_body(message: str) -> bytes:
    """The protocol's error body."""
    return orjson.dumps({"error": message})


def _where(loc: list[Any] | tuple[Any, ...], inputs: set[str]) -> str:
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


def _infer(envelope: bytes, settings: Settings, models: ModelRegistry) -> bytes:
    started = time.perf_counter()
    header_length, name_length = OIP_PRELUDE.unpack_from(envelope)
    model = envelope[OIP_PRELUDE.size : OIP_PRELUDE.size + name_length].decode()
    body = memoryview(envelope)[OIP_PRELUDE.size + name_length :]
    if header_length > len(body):  # the server checked it; never read past the body
        raise OipError(f"the JSON header's length {header_length} exceeds the body's {len(body)} bytes")
    check_strings(settings, body[:header_length])  # a BYTES bomb is refused before the parser sees it
    check_numbers(settings, body[:header_length])  # and a bomb of JSON data
    try:
        header = InferRequestHeader.model_validate(orjson.loads(body[:header_length]))
    except orjson.JSONDecodeError as error:
        raise OipError(f"the JSON header is not valid JSON: {error}") from None
    except ValidationError as error:
        found = describe_validation_errors(error.errors(include_url=False), prefix=())
        raise OipError(
            "; ".join(f"{'.'.join(map(str, e['loc'])) or 'header'}: {e['msg']}" for e in found)
        ) from None
    decoded = decode_inputs(header.inputs, body[header_length:], settings)
    pretrained = model not in (ATTENTION_MODEL, TOY_MODEL)
    translated = translate(header, model, pretrained, decoded)
    try:
        request = AttendRequest.model_validate(translated.fields)
    except ValidationError as error:
        found = describe_validation_errors(error.errors(include_url=False), prefix=())
        raise OipError("; ".join(f"{_where(e['loc'], set(decoded))}: {e['msg']}" for e in found)) from None
    try:
        result = attend_request(request, settings, models, started)
        return oip_body(result, model, header.id, translated.outputs, translated.binary_default)
    except RequestError as error:
        raise OipError(f"{_where(error.loc, set(decoded))}: {error.msg}") from None


def answer_infer(envelope: bytes, settings: Settings, models: ModelRegistry) -> tuple[int, bytes]:
    """The HTTP status and body for an OIP_INFER request (service/protocol.py): 200 with OIP_ANSWER before
    the response, or the protocol's error body: 400 for a request that does not fit, 413 over a limit."""
    try:
        return 200, _infer(envelope, settings, models)
    except OipError as error:
        return 400, error_body(str(error))
    except LimitExceeded as error:
        return 413, error_body(str(error))
    except ModelError as error:
        return 503, error_body(str(error))
    except Exception:  # a bug or an exhausted resource: logged, a 500 for the request, the process goes on
        log.exception("OIP inference failed")
        return 500, error_body("the computation failed unexpectedly; the service log has the details")
