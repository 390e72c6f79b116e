"""The Open Inference Protocol v2 (the KServe / Triton REST protocol) beside /attend: health, server and model
metadata, and POST /v2/models/{name}/infer with JSON tensors and the binary tensor extension.

The server process only checks what it can see without reading a tensor (the model name, the body's byte
limit, the binary header's length against the body) and hands the body to a compute process as an OIP_INFER
request (service/compute/oip/), with the same admission, time limit and limits as /attend. Every error is
the protocol's body, {"error": "..."}."""

from __future__ import annotations

import re
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.routing import APIRoute

from schemas.oip import (
    BINARY_EXTENSION,
    EXPLICIT_MODEL,
    HEADER_LENGTH,
    MODEL_VERSION,
    OIP_PREFIX,
    InferRequestHeader,
    InferResponseHeader,
    Liveness,
    ModelMetadata,
    ModelReadiness,
    OipError,
    ServerMetadata,
    ServerReadiness,
    is_pretrained,
    model_metadata,
)
from schemas.request import TOY_MODEL
from service.errors import (
    SERVER_ERRORS,
    InferRequestError,
    UnknownModel,
    UnsupportedMediaType,
    answer_headers,
    oip_error_body,
    status_of,
)
from service.protocol import OIP_ANSWER, OIP_INFER, OIP_PRELUDE
from service.server.compute_interface import Held
from service.server.handlers import JSON_MEDIA_TYPE, count_refusal, json_response
from service.server.openapi_examples import load_golden
from service.server.routes.attend import DeliveredResponse, client_address, client_watch, read_body
from service.server.routes.health import NO_BODY, NOT_READY
from service.server.security import require_api_key
from service.server.state import AppSettings, ComputeDependency, State

BINARY = "application/octet-stream"
HEADER_LENGTH_DIGITS = re.compile(r"[0-9]{1,19}")
# the types a browser may send from any page without a CORS preflight: they must not start a computation
SIMPLE_FORM_TYPES = ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data")


def oip_error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(oip_error_body(message), status_code=status, media_type=JSON_MEDIA_TYPE, headers=headers)


class OipRoute(APIRoute):
    """A route whose refusals (API key, parameters, body limit, busy, time limit) are the protocol's
    {"error": ...} rather than the service's {"detail": ...}: tritonclient and KServe read `error`. The
    statuses are service/errors.py's, but for FastAPI's own parameter validation: the protocol has no 422, a
    request that does not fit is a 400."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except HTTPException as error:
                return oip_error(error.status_code, str(error.detail), dict(error.headers or {}))
            except RequestValidationError as error:
                return oip_error(400, "; ".join(str(e.get("msg")) for e in error.errors()))
            except SERVER_ERRORS as error:
                status = status_of(error)
                count_refusal(request, status)
                return oip_error(status.code, str(error), answer_headers(status))

        return route


router = APIRouter(prefix=OIP_PREFIX, tags=["open inference protocol"], route_class=OipRoute)
keyed = [Depends(require_api_key)]
ModelName = Annotated[str, Path(description="`attention`, or a model of GET /models", examples=["attention"])]


async def _version(version: Annotated[str, Path(description="The model's version", examples=["1"])]) -> None:
    """Declares the {version} of the /versions/ routes (checked by _metadata)."""


def add_routes(
    path: str, endpoint: Callable[..., Any], method: str, operation_id: str, summary: str, **route: Any
) -> None:
    """The route at /v2{path} and, for a model's route, at its /versions/{version} twin: each with its own
    short operation id (`operation_id`, and `operation_id` with `_version` for the twin)."""
    router.add_api_route(
        path, endpoint, methods=[method], operation_id=operation_id, summary=summary, **route
    )
    if "{name}" in path:
        versioned = path.replace("{name}", "{name}/versions/{version}")
        dependencies = [*route.pop("dependencies", []), Depends(_version)]
        router.add_api_route(
            versioned,
            endpoint,
            methods=[method],
            operation_id=f"{operation_id}_version",
            summary=f"{summary} (of a version)",
            dependencies=dependencies,
            **route,
        )


_WHEN = {
    400: "The request does not fit: its JSON header, a datatype, shape or binary size, the header length.",
    401: "ATTENTION_API_KEYS is set and the X-API-Key header holds no valid key.",
    404: "No such model (or version).",
    413: "The body, or the response it would produce, is over a limit.",
    415: "A compressed body, or one a browser form could send (text/plain, form types).",
    503: "Busy (retry after Retry-After seconds), or the model cannot be served.",
    504: "The request waited and computed longer than ATTENTION_REQUEST_TIMEOUT_S.",
}


def refusals(*statuses: int, **meanings: str) -> dict[int | str, dict[str, Any]]:
    """The documented error answers of a route, each with the protocol's error body; `meanings` overrides a
    description (keyword `s503="..."`)."""
    return {
        status: {"model": OipError, "description": meanings.get(f"s{status}", _WHEN[status])}
        for status in statuses
    }


async def server_metadata(request: Request) -> ServerMetadata:
    return ServerMetadata(
        name="attention-service", version=request.app.version, extensions=[BINARY_EXTENSION]
    )


async def live() -> Liveness:
    return Liveness(live=True)


async def live_head() -> Response:
    return Response()


async def ready(state: State) -> Response:
    if not state.computing():
        return json_response(503, {"error": f"not ready: {NOT_READY.lower()}"}, {"Retry-After": "1"})
    return json_response(200, ServerReadiness(ready=True).model_dump())


async def ready_head(state: State) -> Response:
    return Response(status_code=200 if state.computing() else 503)


def _metadata(request: Request, compute: ComputeDependency, name: str) -> ModelMetadata:
    """The model's metadata; a 404 for a name that is not the explicit model, the toy model or a model of
    GET /models, or a version (in the path of the /versions/{version} routes) other than the one there is."""
    version = request.path_params.get("version")
    if version is not None and version != MODEL_VERSION:
        raise UnknownModel(f"model {name!r} has no version {version!r}; expected {MODEL_VERSION!r}")
    if not is_pretrained(name):
        return model_metadata(name, None)
    for model in compute.models:
        if model.name == name:
            return model_metadata(name, model.layers)
    known = ", ".join([EXPLICIT_MODEL, *(model.name for model in compute.models), TOY_MODEL])
    raise UnknownModel(f"found model {name!r}; expected one of: {known}")


async def get_model_metadata(request: Request, compute: ComputeDependency, name: ModelName) -> ModelMetadata:
    return _metadata(request, compute, name)


async def model_ready(
    request: Request, state: State, compute: ComputeDependency, name: ModelName
) -> Response:
    _metadata(request, compute, name)
    if not state.computing():
        return json_response(
            503, {"error": f"model {name!r} not ready: {NOT_READY.lower()}"}, {"Retry-After": "1"}
        )
    return json_response(200, ModelReadiness(name=name, ready=True).model_dump())


def _check_media(request: Request) -> None:
    """A 415 for a body that a web page could send cross-site without a CORS preflight: one of a form's
    types, or none from a browser (fetch with mode "no-cors" and an ArrayBuffer; a browser marks every POST
    with Origin, and with Sec-Fetch-Mode). A body without Content-Type from any other client is JSON, as
    tritonclient sends it; Inference-Header-Content-Length cannot be sent cross-site without a preflight."""
    declared = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    from_a_page = "origin" in request.headers or request.headers.get("sec-fetch-mode") == "no-cors"
    undeclared = not declared and from_a_page and HEADER_LENGTH not in request.headers
    if declared in SIMPLE_FORM_TYPES or undeclared:
        found = f"Content-Type {declared!r}" if declared else "no Content-Type from a web page"
        raise UnsupportedMediaType(
            f"found {found}; expected application/json, application/octet-stream, or none outside a "
            "browser (a body a web page could send cross-site does not start a computation)",
        )
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding != "identity":
        raise UnsupportedMediaType(f"found Content-Encoding {encoding!r}; expected an uncompressed body")


def header_length(request: Request, body_length: int) -> int:
    """The length of the body's JSON header: Inference-Header-Content-Length, a decimal number of bytes from 1
    to the body's length, or the whole body when absent. Nothing past the body can ever be read."""
    declared = request.headers.getlist(HEADER_LENGTH)
    if not declared:
        return body_length
    if len(declared) > 1:
        raise InferRequestError(f"found {len(declared)} {HEADER_LENGTH} headers; expected one")
    if not HEADER_LENGTH_DIGITS.fullmatch(declared[0]) or not 1 <= int(declared[0]) <= body_length:
        raise InferRequestError(
            f"found {HEADER_LENGTH} {declared[0][:40]!r}; expected a decimal number of bytes from 1 to the "
            f"body's length, {body_length}",
        )
    return int(declared[0])


class InferResponse(DeliveredResponse):
    """The compute process's answer: for a 200, OIP_ANSWER (the JSON header's length) then the response,
    sent from after it without a copy, with Inference-Header-Content-Length when binary data follows."""

    def __init__(self, held: Held, send_timeout: float):
        if held.status != 200:
            Response.__init__(self, held.content, status_code=held.status, media_type=JSON_MEDIA_TYPE)
        else:
            (length,) = OIP_ANSWER.unpack_from(held.content)
            payload = memoryview(held.content)[OIP_ANSWER.size :]
            binary = length < len(payload)
            Response.__init__(
                self,
                payload,
                status_code=200,
                headers={HEADER_LENGTH: str(length)} if binary else None,
                media_type=BINARY if binary else JSON_MEDIA_TYPE,
            )
        self.release, self.send_timeout = held.release, send_timeout


def infer_example() -> dict[str, Any]:
    """The worked example 猫 吃 鱼 (service/golden/) as JSON tensors for the `attention` model."""
    cat = load_golden("seed_cat_eats_fish")
    tensors = {"embeddings": cat["embeddings"], **{f"w_{m}": cat[f"w_{m}_in_out"] for m in "qkv"}}
    return {
        "inputs": [
            {"name": name, "shape": [len(rows), len(rows[0])], "datatype": "FP32", "data": sum(rows, [])}
            for name, rows in tensors.items()
        ],
        "outputs": [{"name": "weights"}, {"name": "output"}],
    }


_INFER: dict[str, Any] = {
    "dependencies": keyed,
    "response_class": Response,
    "responses": {
        200: {
            "description": "The output tensors: JSON, or a JSON header (its length in "
            "Inference-Header-Content-Length) followed by the binary outputs.",
            "content": {
                JSON_MEDIA_TYPE: {"schema": {"$ref": f"#/components/schemas/{InferResponseHeader.__name__}"}},
                BINARY: {"schema": {"type": "string", "format": "binary"}},
            },
        },
        **refusals(400, 401, 404, 413, 415, 503, 504),
    },
    # One media type: a document that lists the binary form as a second one makes clients generated by
    # openapi-python-client (0.29) fail to import (the body becomes `InferRequestHeader | File | Unset`
    # without Unset imported); the binary form, which tritonclient and KServe's clients send, is described.
    "openapi_extra": {
        "requestBody": {
            "required": True,
            "description": "The inference request: JSON. Its binary form (the binary tensor data extension) "
            f"is the same JSON header followed by the inputs' bytes, sent as {BINARY} (or with no "
            f"Content-Type) with the header's length in {HEADER_LENGTH}; each input then gives its bytes in "
            "parameters.binary_data_size instead of data.",
            "content": {
                JSON_MEDIA_TYPE: {
                    "schema": {"$ref": f"#/components/schemas/{InferRequestHeader.__name__}"},
                    "example": infer_example(),
                }
            },
        }
    },
}


async def infer(
    request: Request, settings: AppSettings, compute: ComputeDependency, name: ModelName
) -> Response:
    _metadata(request, compute, name)
    _check_media(request)
    body = await read_body(request, settings.max_request_bytes)
    length = header_length(request, len(body))
    model = name.encode()
    envelope = b"".join((OIP_PRELUDE.pack(length, len(model)), model, body))
    del body  # one copy of the body held while it waits and computes
    held = await compute.run(
        envelope,
        disconnected=client_watch(request),
        kind=OIP_INFER,
        client=client_address(request),
    )
    return InferResponse(held, settings.send_timeout_s)


_HEAD: dict[str, Any] = {"response_class": Response}
add_routes(
    "",
    server_metadata,
    "GET",
    "oip_server_metadata",
    "Server metadata",
    dependencies=keyed,
    responses=refusals(401),
)
add_routes("/health/live", live, "GET", "oip_live", "The server is alive")
add_routes(
    "/health/live", live_head, "HEAD", "oip_live_head", "The server is alive", responses=NO_BODY, **_HEAD
)
add_routes(
    "/health/ready",
    ready,
    "GET",
    "oip_ready",
    "The server is ready to infer",
    responses={200: {"model": ServerReadiness}, **refusals(503, s503=NOT_READY)},
)
add_routes(
    "/health/ready",
    ready_head,
    "HEAD",
    "oip_ready_head",
    "The server is ready to infer",
    responses={**NO_BODY, 503: {"description": NOT_READY}},
    **_HEAD,
)
add_routes(
    "/models/{name}",
    get_model_metadata,
    "GET",
    "oip_model_metadata",
    "Model metadata: inputs and outputs",
    dependencies=keyed,
    responses=refusals(401, 404),
)
add_routes(
    "/models/{name}/ready",
    model_ready,
    "GET",
    "oip_model_ready",
    "The model is ready to infer",
    dependencies=keyed,
    responses={200: {"model": ModelReadiness}, **refusals(401, 404, 503, s503=NOT_READY)},
)
add_routes("/models/{name}/infer", infer, "POST", "oip_infer", "Inference: JSON or binary tensors", **_INFER)
