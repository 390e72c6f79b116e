"""GET /models: the pretrained models this service can use, and the toy mode."""

from fastapi import APIRouter, Depends

from schemas.request import TOY_D_MODEL, TOY_MODEL
from schemas.service_info import ModelInfo, ModelList
from service.server.routes.documented import UNAUTHORIZED, error_responses
from service.server.security import require_api_key
from service.server.state import AppSettings, ComputeDependency

router = APIRouter(tags=["models"], dependencies=[Depends(require_api_key)])


@router.get(
    "/models",
    operation_id="list_models",
    summary="Models for `text`: pretrained ones and the toy mode",
    responses=error_responses(UNAUTHORIZED),
)
async def list_models(settings: AppSettings, compute: ComputeDependency) -> ModelList:
    toy = ModelInfo(
        name=TOY_MODEL,
        toy=True,
        loaded=True,
        d_model=TOY_D_MODEL,
        max_d_model=settings.toy_max_d_model,
        about="whitespace tokens (characters for text without spaces) mapped to seeded embeddings; "
        "then the weights of `weights` (init and seed, or explicit)",
    )
    return ModelList(default=settings.default_model, models=[*compute.models, toy])
