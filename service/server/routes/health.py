"""Liveness and readiness for orchestrators and load balancers."""

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

router = APIRouter(tags=["health"])


@router.api_route("/healthz", methods=["GET", "HEAD"], summary="The process is alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.api_route(
    "/readyz",
    methods=["GET", "HEAD"],
    summary="The service is ready to compute",
    responses={503: {"description": "Still starting, or every compute process is being replaced"}},
)
async def readyz(request: Request) -> JSONResponse:
    state = request.app.state
    if not state.ready:
        return JSONResponse({"status": "starting"}, status_code=503)
    if state.compute.up == 0:
        return JSONResponse({"status": "replacing its compute processes"}, status_code=503)
    return JSONResponse({"status": "ready", "device": state.device, "torch_version": state.torch_version})
