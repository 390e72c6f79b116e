"""Liveness and readiness for orchestrators and load balancers (GET, and HEAD without a body)."""

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from schemas.service_info import Health, Readiness
from service.server.routes.documented import error_responses
from service.server.state import ServiceState, State

router = APIRouter(tags=["health"])

NOT_READY = "Still starting, or every compute process is being replaced."
NO_BODY: dict[int | str, dict[str, Any]] = {200: {"description": "As GET, without a body."}}


@router.get("/healthz", operation_id="healthz", summary="The process is alive")
async def healthz() -> Health:
    return Health(status="ok")


@router.head(
    "/healthz",
    operation_id="healthz_head",
    summary="The process is alive",
    response_class=Response,
    responses=NO_BODY,
)
async def healthz_head() -> Response:
    return Response()


STARTING = "starting: loading the models and warming up"


def _readiness(state: ServiceState) -> JSONResponse:
    if not state.ready or state.compute is None or state.compute.started is None:
        return JSONResponse({"detail": STARTING}, status_code=503)
    if state.compute.up == 0:
        return JSONResponse({"detail": "replacing its compute processes"}, status_code=503)
    started = state.compute.started
    ready = Readiness(status="ready", device=started["device"], torch_version=started["torch_version"])
    return JSONResponse(ready.model_dump())


@router.get(
    "/readyz",
    operation_id="readyz",
    summary="The service is ready to compute",
    response_model=Readiness,
    responses=error_responses(503, s503=NOT_READY, examples={503: {"detail": STARTING}}),
)
async def readyz(state: State) -> JSONResponse:
    return _readiness(state)


@router.head(
    "/readyz",
    operation_id="readyz_head",
    summary="The service is ready to compute",
    response_class=Response,
    responses={**NO_BODY, 503: {"description": NOT_READY}},
)
async def readyz_head(state: State) -> Response:
    return Response(status_code=_readiness(state).status_code)
