"""The OpenAPI document at /openapi.json, true to what this service does with its settings: FastAPI's
document, plus the request schema (which FastAPI cannot see because /attend parses its own body, in a compute
process with pydantic-core's JSON parser rather than json.loads on the event loop), and the API key declared
only when ATTENTION_API_KEYS is set."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from schemas.request import AttendRequest
from service.server.routes.documented import UNAUTHORIZED


def _without_api_key(document: dict[str, Any]) -> None:
    """Keys off: no operation requires one, and none answers 401."""
    document.get("components", {}).pop("securitySchemes", None)
    for operations in document["paths"].values():
        for operation in operations.values():
            operation.pop("security", None)
            operation.get("responses", {}).pop(str(UNAUTHORIZED), None)


def build_document(app: FastAPI) -> dict[str, Any]:
    document = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    request_schema = AttendRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(request_schema.pop("$defs", {}))
    schemas[AttendRequest.__name__] = request_schema
    if not app.state.settings.api_keys:
        _without_api_key(document)
    return document
