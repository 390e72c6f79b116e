"""The framework's floor the benchmark compares small requests against: a bare FastAPI endpoint that answers
`POST /attend` with the body it was sent, byte for byte.

No computation, no validation, no middleware: what FastAPI and uvicorn cost per request, served the same way
as the naive baseline (bench/baseline.py: its own uvicorn process, the same flags and HTTP protocol). Issue 26
asks the service to serve small requests at no less than 0.9x of it.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import Response

app = FastAPI()


@app.get("/readyz")
async def readyz() -> dict[str, str]:
    return {"status": "ready"}


@app.post("/attend")
async def attend(request: Request) -> Response:
    return Response(await request.body(), media_type="application/json")
