"""POST /attend: read the body within its byte limit, then hand it to a compute process."""

from __future__ import annotations

from functools import partial

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from schemas.request import AttendRequest
from schemas.response import AttendResponse, ErrorResponse, LimitError
from service.errors import LimitExceeded
from service.server.openapi_examples import request_examples
from service.server.security import require_api_key

router = APIRouter(tags=["attention"], dependencies=[Depends(require_api_key)])


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused as soon as it is known to exceed `limit` bytes, never read beyond it."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise LimitExceeded("ATTENTION_MAX_REQUEST_BYTES", limit, int(declared), "request body bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise LimitExceeded(
                "ATTENTION_MAX_REQUEST_BYTES", limit, size, "request body bytes (read so far)"
            )
        chunks.append(chunk)
    return b"".join(chunks)


async def client_disconnected(request: Request) -> None:
    """Returns when the client goes away (the body has been read, so the next message is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


@router.post(
    "/attend",
    summary="Compute attention and return its internals",
    description="Q, K, V, the raw and scaled scores, the softmax weights, the per-head context and the "
    "output, each with all its axes (see `meta.axes`). The examples are the worked examples of the project, "
    "with exact expected values.",
    response_class=Response,
    responses={
        200: {"model": AttendResponse, "description": "The requested tensors and `meta`."},
        413: {
            "model": LimitError,
            "description": "The request or the response it would produce is over a limit.",
        },
        422: {
            "model": ErrorResponse,
            "description": "Malformed input: the field, what was found, what was expected.",
        },
        401: {"description": "ATTENTION_API_KEYS is set and the X-API-Key header holds no valid key."},
        503: {
            "description": "Busy (every place taken: retry after Retry-After seconds), or the named model "
            "cannot be served (e.g. its weights file fails its checksum)."
        },
        504: {"description": "The request waited and computed longer than ATTENTION_REQUEST_TIMEOUT_S."},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"$ref": f"#/components/schemas/{AttendRequest.__name__}"},
                    "examples": request_examples(),
                }
            },
        }
    },
)
async def post_attend(request: Request) -> Response:
    state = request.app.state
    body = await read_body(request, state.settings.max_request_bytes)
    status, content = await state.compute.run(body, disconnected=partial(client_disconnected, request))
    return Response(content, status_code=status, media_type="application/json")
