"""GET /: the attention explorer page, with its script and style under /static (no CDN: it works offline)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).resolve().parents[1] / "static"

router = APIRouter(tags=["explorer"])
static_files = StaticFiles(directory=STATIC)


@router.get("/", include_in_schema=False)
async def explorer() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html")
