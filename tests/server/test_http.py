"""What only the wire shows: health and readiness, Swagger UI, the OpenAPI document and its examples run
over HTTP, GET /models, the request byte limit (from Content-Length, or cut off while streaming) and CORS
defaults."""

from __future__ import annotations

import json

import numpy as np
import torch

from devtools.compute import InProcess
from schemas.request import AttendRequest
from schemas.response import AttendResponse
from service.settings import BUNDLED_MODEL
from tests.support.http import API_KEY, GUARDED_MAX_REQUEST_BYTES


def test_health_and_readiness(server):
    assert server.client.get("/healthz").json() == {"status": "ok"}
    ready = server.client.get("/readyz").json()
    assert ready["status"] == "ready" and ready["torch_version"] == torch.__version__


def test_swagger_ui_is_served(server):
    page = server.client.get("/docs")
    assert page.status_code == 200 and "swagger-ui" in page.text


def test_openapi_documents_every_field_with_examples(server):
    document = server.client.get("/openapi.json").json()
    schemas = document["components"]["schemas"]
    for model in ("AttendRequest", "WeightSpec"):
        for name, field in schemas[model]["properties"].items():
            assert field.get("description"), f"{model}.{name} has no description"
    for name in ("embeddings", "query", "attention_mask"):
        assert "shape [" in str(schemas["AttendRequest"]["properties"][name])
    body = document["paths"]["/attend"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"] == {"$ref": "#/components/schemas/AttendRequest"}
    assert {"cat_eats_fish", "cat_eats_fish_torch_layout", "age_lookup", "age_lookup_unscaled"} <= set(
        body["examples"]
    )
    responses = document["paths"]["/attend"]["post"]["responses"]
    assert {"200", "413", "422"} <= set(responses)


def test_every_swagger_example_works_and_matches_the_response_schema(server):
    examples = server.client.get("/openapi.json").json()["paths"]["/attend"]["post"]["requestBody"][
        "content"
    ]["application/json"]["examples"]
    for name, example in examples.items():
        AttendRequest.model_validate_json(json.dumps(example["value"]))
        response = server.post(example["value"])
        assert response.status_code == 200, (name, response.text)
        body = AttendResponse.model_validate(response.json())
        holders = body.layers if body.layers is not None else [body]  # pretrained models: one entry per layer
        for holder in holders:
            for tensor in body.meta.axes:
                assert np.asarray(getattr(holder, tensor), dtype=float).shape == tuple(
                    body.meta.shapes[tensor]
                )


def test_models_endpoint_lists_models_and_toy(server):
    listing = server.client.get("/models").json()
    assert listing["default"] == BUNDLED_MODEL
    by_name = {m["name"]: m for m in listing["models"]}
    minilm = by_name[BUNDLED_MODEL]
    assert (
        minilm["layers"],
        minilm["heads"],
        minilm["d_model"],
        minilm["vocab_size"],
        minilm["max_length"],
    ) == (6, 12, 384, 30522, 512)
    assert minilm["loaded"] is True and by_name["toy"]["toy"] is True


def test_an_answer_over_http_is_the_pipeline_answer(server):
    """The server passes the compute process's status and JSON through: 200, 422 and 413 read as in
    process."""
    pipeline = InProcess.from_env({})
    statuses = []
    for body in (
        {"embeddings": [[1.0, 0.0], [0.0, 1.0]], "causal": True, "weights": {"seed": 7}},
        {"embeddings": [[1, 2], [3]]},
        {"embeddings": [[1.0]], "d_k": 10**9, "d_v": 1},
    ):
        over_http, in_process = server.post(body), pipeline.post(body)
        assert over_http.status_code == in_process.status_code
        statuses.append(over_http.status_code)
        assert over_http.headers["content-type"] == "application/json"
        wire, local = over_http.json(), in_process.json()
        if over_http.status_code == 200:
            assert wire["meta"].pop("elapsed_ms") > 0 and local["meta"].pop("elapsed_ms") > 0
        assert wire == local
    assert statuses == [200, 422, 413]


KEYED = {"content-type": "application/json", "x-api-key": API_KEY}


def test_body_over_the_byte_limit_is_refused_from_its_content_length(guarded):
    body = b'{"embeddings": [[' + b"1.0," * 10000 + b"1.0]]}"
    response = guarded.client.post("/attend", content=body, headers=KEYED)
    assert response.status_code == 413
    assert response.json()["limit"] == "ATTENTION_MAX_REQUEST_BYTES"
    assert response.json()["maximum"] == GUARDED_MAX_REQUEST_BYTES
    assert response.json()["estimate"] == len(body)


def test_streamed_body_is_cut_off_at_the_byte_limit(guarded):
    """A chunked body without Content-Length is read only up to the limit."""
    sent = []

    def endless():
        yield b'{"embeddings": [['
        for _ in range(100_000):  # 1.5 MB if it were all read; the server must stop at 20 kB
            sent.append(1)
            yield b"1.0, 1.0, 1.0, "
        yield b"1.0]]}"

    response = guarded.client.post("/attend", content=endless(), headers=KEYED)
    assert response.status_code == 413
    assert response.json()["limit"] == "ATTENTION_MAX_REQUEST_BYTES"
    assert GUARDED_MAX_REQUEST_BYTES < response.json()["estimate"] < 2 * GUARDED_MAX_REQUEST_BYTES


def test_a_body_within_the_byte_limit_is_computed(guarded):
    body = json.dumps({"embeddings": [[1.0] * 8] * 8, "num_heads": 2}).encode()
    assert len(body) < GUARDED_MAX_REQUEST_BYTES
    assert guarded.client.post("/attend", content=body, headers=KEYED).status_code == 200
