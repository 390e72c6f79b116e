"""The OpenAPI document tells the truth, checked in process from the app's own document: `{}` and the other
bodies the request model refuses are invalid by the schema (and valid bodies valid), every schema default is
what the service does without the field, the API key is declared only when keys are set, every operation has
a short id and every answer a schema, all 4xx/5xx with one error body."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import jsonschema
import pytest
from pydantic import ValidationError

from devtools.compute import settings_from_env
from schemas.request import AttendRequest
from service.server.app import create_app
from tests.server.schemathesis.hooks import refusals_of_valid_bodies_are_cross_field
from tests.support.http import API_KEY


def document(env: dict[str, str] | None = None) -> dict[str, Any]:
    return create_app(settings_from_env(env or {})).openapi()


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schemas = document()["components"]["schemas"]
    root = {"$ref": "#/components/schemas/AttendRequest", "components": {"schemas": schemas}}
    return jsonschema.Draft202012Validator(root)


CAT = {"embeddings": [[1.0, 0.0], [0.0, 1.0]]}
QKV = {"query": [[1.0]], "key": [[1.0]], "value": [[1.0]]}
BODIES = [
    {},
    {"embeddings": None},
    {"text": " \t\x1f\u3000"},  # whitespace to Python (\x1f included), as the service reads it
    {"text": []},
    {"text": "a", "embeddings": [[1.0]]},
    {"query": [[1.0]]},
    {**QKV, "weights": {"seed": 1}},
    {**QKV, "context": [[1.0]]},
    {"context": [[1.0]]},
    {**CAT, "model": "toy"},
    {**CAT, "layer": 0},
    {"text": "a", "model": "toy", "layer": 0},
    {"text": "a", "d_model": 4},
    {"text": "a", "weights": {"seed": 1}},
    {"text": "a", "attention_mask": [[1]]},
    {**CAT, "weights": {"w_q": [[1.0]]}},
    {**CAT, "weights": {"w_o": [[1.0]]}},
    {**CAT, "weights": {"b_o": [1.0], "w_q": [[1.0]], "w_k": [[1.0]], "w_v": [[1.0]]}},
    {**CAT, "num_heads": 0},
    {**CAT, "num_heads": "2"},
    {**CAT, "num_heads": True},
    {**CAT, "num_heads": 1.5},
    {**CAT, "decimals": 16},
    {**CAT, "unknown": 1},
    # valid
    CAT,
    QKV,
    {**CAT, "context": [[1.0, 2.0]], "num_heads": 2.0, "text": None, "model": None, "layer": None},
    {"text": ["a b", "c"], "layer": [0, 5], "num_heads": None, "truncate": True},
    {"text": "猫 吃 鱼", "model": "toy", "d_model": 4, "weights": {"seed": 3, "init": "normal"}},
    {**CAT, "weights": {"w_q": [[1.0]], "w_k": [[1.0]], "w_v": [[1.0]], "w_o": [[1.0]], "b_o": [1.0]}},
]


@pytest.mark.parametrize("body", BODIES, ids=[json.dumps(b)[:60] for b in BODIES])
def test_the_schema_refuses_what_the_request_model_refuses(validator, body):
    try:
        AttendRequest.model_validate_json(json.dumps(body))
        accepted = True
    except ValidationError:
        accepted = False
    assert validator.is_valid(body) is accepted


def test_every_example_is_valid_by_the_schema(validator):
    examples = document()["paths"]["/attend"]["post"]["requestBody"]["content"]["application/json"][
        "examples"
    ]
    for name, example in examples.items():
        assert validator.is_valid(example["value"]), name


def test_every_default_is_what_the_service_does_without_the_field():
    """A generated client sends every default: each must parse to what leaving the field out gives."""
    schemas = document()["components"]["schemas"]
    for model, base in (("AttendRequest", {"embeddings": [[1.0]]}), ("WeightSpec", {})):
        for name, field in schemas[model]["properties"].items():
            assert "default" in field, f"{model}.{name} has no default"
            if model == "AttendRequest":
                without, sent = AttendRequest.model_validate(base), {**base, name: field["default"]}
                if name == "embeddings":
                    continue
                assert (
                    AttendRequest.model_validate_json(json.dumps(sent)).model_dump() == without.model_dump()
                )
            else:
                sent = {"embeddings": [[1.0]], "weights": {name: field["default"]}}
                assert (
                    AttendRequest.model_validate_json(json.dumps(sent)).weights
                    == AttendRequest.model_validate({"embeddings": [[1.0]], "weights": {}}).weights
                )
    assert schemas["AttendRequest"]["properties"]["num_heads"]["default"] is None


def _operations(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {op["operationId"]: op for methods in doc["paths"].values() for op in methods.values()}


def test_operations_have_short_ids_and_every_answer_a_schema():
    operations = _operations(document())
    assert set(operations) == {
        "attend",
        "list_models",
        "healthz",
        "healthz_head",
        "readyz",
        "readyz_head",
        "metrics",
        # the Open Inference Protocol v2; a model's routes also under /versions/{version}
        "oip_server_metadata",
        "oip_live",
        "oip_live_head",
        "oip_ready",
        "oip_ready_head",
        "oip_model_metadata",
        "oip_model_metadata_version",
        "oip_model_ready",
        "oip_model_ready_version",
        "oip_infer",
        "oip_infer_version",
    }
    schemas = document()["components"]["schemas"]
    for name, operation in operations.items():
        # the protocol's own error body on its routes, the service's everywhere else
        error_body = "OipError" if name.startswith("oip_") else "ErrorBody"
        for status, answer in operation["responses"].items():
            if name.endswith("_head"):
                assert "content" not in answer, (name, status)  # HEAD answers have no body
                continue
            for media in answer["content"].values():
                assert media["schema"], (name, status)
                ref = media["schema"].get("$ref")
                assert ref is None or ref.rsplit("/", 1)[1] in schemas, (name, status, ref)
            if int(status) >= 400:  # errors are JSON whatever the Accept (a 200 may have several formats)
                (media,) = answer["content"].values()
                assert media["schema"] == {"$ref": f"#/components/schemas/{error_body}"}, (name, status)


def test_the_api_key_is_declared_only_when_keys_are_set():
    off = document()
    assert "securitySchemes" not in off["components"]
    for operation in _operations(off).values():
        assert "security" not in operation and "401" not in operation["responses"]
    on = _operations(document({"ATTENTION_API_KEYS": json.dumps([API_KEY])}))
    for name in ("attend", "list_models"):
        assert on[name]["security"] == [{"APIKeyHeader": []}] and "401" in on[name]["responses"]
    assert "security" not in on["healthz"] and "security" not in on["readyz"]


def _case(body: Any, positive: bool = True) -> Any:
    mode = SimpleNamespace(is_positive=positive)
    return SimpleNamespace(
        meta=SimpleNamespace(generation=SimpleNamespace(mode=mode)),
        operation=SimpleNamespace(label="POST /attend"),
        body=body,
    )


def test_the_fuzzers_allowance_covers_only_what_json_schema_cannot_state():
    refused = SimpleNamespace(status_code=422)
    # ragged
    refusals_of_valid_bodies_are_cross_field(None, refused, _case({"embeddings": [[1.0, 2.0], [3.0]]}))
    # shapes across fields
    refusals_of_valid_bodies_are_cross_field(None, refused, _case({**CAT, "num_heads": 3}))
    with pytest.raises(AssertionError, match="num_heads"):
        refusals_of_valid_bodies_are_cross_field(None, refused, _case({**CAT, "num_heads": 0}))
    refusals_of_valid_bodies_are_cross_field(None, refused, _case({**CAT, "num_heads": 0}, positive=False))
