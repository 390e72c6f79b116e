"""GET /models: the pretrained models this service can use, and the toy mode."""

from typing import Any

from fastapi import APIRouter, Depends, Request

from schemas.request import TOY_D_MODEL, TOY_MODEL
from service.server.security import require_api_key

router = APIRouter(tags=["models"], dependencies=[Depends(require_api_key)])


@router.get("/models", summary="Models for `text`: pretrained ones and the toy mode")
async def list_models(request: Request) -> dict[str, Any]:
    state = request.app.state
    toy = {
        "name": TOY_MODEL,
        "toy": True,
        "layers": None,
        "heads": None,
        "d_model": TOY_D_MODEL,
        "max_d_model": state.settings.toy_max_d_model,
        "loaded": True,
        "about": "whitespace tokens (characters for text without spaces) mapped to seeded embeddings; "
        "then the weights of `weights` (init and seed, or explicit)",
    }
    models = [{**entry, "toy": False} for entry in state.compute.models]
    return {"default": state.settings.default_model, "models": [*models, toy]}
