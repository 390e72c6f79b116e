"""The OpenAPI document at /openapi.json, true to what this service does with its settings: FastAPI's
document, plus the request schemas (which FastAPI cannot see because /attend and the Open Inference Protocol's
infer parse their own bodies, in a compute process with pydantic-core's JSON parser rather than json.loads on
the event loop), and the API key declared only when ATTENTION_API_KEYS is set."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from schemas.oip import EXPLICIT_MODEL, MODEL_VERSION, OIP_PREFIX, InferRequestHeader, InferResponseHeader
from schemas.request import TOY_MODEL, AttendRequest
from service.server.routes.documented import UNAUTHORIZED
from service.server.state import service_state


def _without_api_key(document: dict[str, Any]) -> None:
    """Keys off: no operation requires one, and none answers 401."""
    document.get("components", {}).pop("securitySchemes", None)
    for operations in document["paths"].values():
        for operation in operations.values():
            operation.pop("security", None)
            operation.get("responses", {}).pop(str(UNAUTHORIZED), None)


def _without_validation_answer(document: dict[str, Any], prefix: str) -> None:
    """FastAPI declares a 422 on every route with parameters; the Open Inference Protocol's routes answer a
    parameter they cannot read with the protocol's 400 instead (service/server/routes/oip.py)."""
    for path, operations in document["paths"].items():
        if path.startswith(prefix):
            for operation in operations.values():
                operation.get("responses", {}).pop("422", None)


def _oip_models(document: dict[str, Any], names: list[str]) -> None:
    """The protocol's {name} is one of the models this service serves, and {version} its one version: said in
    the document, so that clients and contract testers see them (and reach the routes' checks, not a 404)."""
    for path, operations in document["paths"].items():
        if path.startswith(f"{OIP_PREFIX}/models/"):
            for operation in operations.values():
                for parameter in operation.get("parameters", []):
                    if parameter["in"] == "path" and parameter["name"] == "name":
                        parameter["schema"]["enum"] = names
                    elif parameter["in"] == "path" and parameter["name"] == "version":
                        parameter["schema"]["enum"] = [MODEL_VERSION]


def build_document(app: FastAPI) -> dict[str, Any]:
    document = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    # bodies that routes read themselves (FastAPI does not see them), referred to by name from the routes
    for model in (AttendRequest, InferRequestHeader, InferResponseHeader):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    _without_validation_answer(document, OIP_PREFIX)
    settings = service_state(app).settings
    _oip_models(document, [EXPLICIT_MODEL, settings.default_model, *settings.models, TOY_MODEL])
    if not settings.api_keys:
        _without_api_key(document)
    return document
