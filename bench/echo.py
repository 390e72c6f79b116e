"""The framework's floors the benchmark compares small requests against: bare FastAPI endpoints that answer
`POST /attend` with the body they were sent.

- `app`: the body byte for byte (`Request.body()` into a `Response`): what FastAPI and uvicorn cost per
  request with no JSON at all.
- `typed_app`: the echo as a FastAPI user writes one, a declared JSON body parameter returned as JSON
  (`async def attend(body: dict[str, Any]) -> dict[str, Any]`): the body parsed, validated and serialized
  again by FastAPI and pydantic. The same JSON, not the same bytes (no spaces).

No computation, no middleware: served the same way as the naive baseline (bench/baseline.py: its own
uvicorn process, the same flags and HTTP protocol). Issue 26 asks the service to serve small requests at no
less than 0.9x of "a bare FastAPI endpoint that echoes the same body"; docs/benchmarks.md reports the service
against both.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response

app = FastAPI()
typed_app = FastAPI()


@app.get("/readyz")
@typed_app.get("/readyz")
async def readyz() -> dict[str, str]:
    return {"status": "ready"}


@app.post("/attend")
async def attend(request: Request) -> Response:
    return Response(await request.body(), media_type="application/json")


@typed_app.post("/attend")
async def attend_typed(body: dict[str, Any]) -> dict[str, Any]:
    return body
