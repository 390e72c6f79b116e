"""The Ray Serve replica's app (service/ray_serve/replica.py) without Ray: served by uvicorn, it must answer
as the plain service does, computing in its own process with the compute processes' pipeline, and refuse with
the service's statuses. The same app behind Ray's proxy on a real cluster: scripts/ray-smoke.sh."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from devtools.compute import InProcess
from devtools.openapi import comparable
from devtools.servers import Server
from service.server.app import create_app
from tests.support.formats import read_safetensors

REPLICA_APP = "service.ray_serve.replica:local_app"
GOLDEN_LIKE = {"embeddings": [[1.0, 0.0, 2.0], [0.0, 1.0, -1.0]], "causal": True, "weights": {"seed": 7}}
# about 4 s of one core: 1500 toy tokens, d_model 512, 8 heads, float64
SLOW = {
    "text": " ".join(f"w{i}" for i in range(1500)),
    "model": "toy",
    "d_model": 512,
    "num_heads": 8,
    "dtype": "float64",
    "include": ["output"],
}
SLOW_ENV = {"ATTENTION_REQUEST_TIMEOUT_S": "0.5", "ATTENTION_MAX_COMPUTE_ELEMENTS": "400000000"}


@pytest.fixture(scope="module")
def replica():
    with Server({"ATTENTION_TORCH_THREADS": "1"}, app=REPLICA_APP, uvicorn_args=("--factory",)) as server:
        yield server


def test_replica_answers_what_the_pipeline_answers(replica):
    """200, 422 and 413 as the compute processes' pipeline answers them in this process, and the text path."""
    pipeline = InProcess.from_env({})
    text = {"text": "The cat ate the fish", "layer": [0, 5], "include": ["weights"]}
    bodies = (
        GOLDEN_LIKE,
        text,
        {"embeddings": [[1, 2], [3]]},
        {"embeddings": [[1.0]], "d_k": 10**9, "d_v": 1},
    )
    statuses = []
    for body in bodies:
        wire, local = replica.post(body), pipeline.post(body)
        statuses.append(wire.status_code)
        assert wire.status_code == local.status_code
        got, expected = wire.json(), local.json()
        if wire.status_code == 200:
            got["meta"].pop("elapsed_ms"), expected["meta"].pop("elapsed_ms")
        assert _close(got, expected)  # float32 sums over 1 thread there, maybe more here
    assert statuses == [200, 200, 422, 413]


def _close(got: object, expected: object) -> bool:
    """Equal, but for float32 rounding: the same keys, lengths, strings and numbers within 1e-5."""
    if isinstance(got, float) and isinstance(expected, float):
        return abs(got - expected) <= 1e-5 * max(1.0, abs(expected))
    if isinstance(got, list) and isinstance(expected, list):
        return len(got) == len(expected) and all(map(_close, got, expected))
    if isinstance(got, dict) and isinstance(expected, dict):
        return got.keys() == expected.keys() and all(_close(got[key], expected[key]) for key in got)
    return got == expected


def test_replica_has_the_plain_service_routes_and_openapi_document(replica):
    served = replica.client.get("/openapi.json").json()
    assert comparable(served) == comparable(create_app().openapi())
    ready = replica.client.get("/readyz").json()
    assert ready["status"] == "ready" and ready["device"] == "cpu"
    models = replica.client.get("/models").json()
    assert {model["name"] for model in models["models"]} >= {"all-MiniLM-L6-v2", "toy"}


def test_replica_metrics_name_the_replica(replica):
    replica.post(GOLDEN_LIKE)
    metrics = replica.client.get("/metrics").text
    assert 'attention_replica_info{node="local",pid="' in metrics
    assert 'attention_requests_total{method="POST",route="/attend",status="200"}' in metrics
    # the default model is loaded at the replica's start
    assert 'attention_model_load_seconds{model="all-MiniLM-L6-v2"}' in metrics


@pytest.mark.slow
def test_a_computation_past_the_time_limit_is_504_and_the_replica_reports_itself_unfit_until_it_ends():
    """A thread cannot be stopped: the replica answers 504, then 503 with Retry-After and an unready /readyz
    (Serve's health check replaces it) while the runaway computation holds its compute thread."""
    with Server(SLOW_ENV, app=REPLICA_APP, uvicorn_args=("--factory",)) as server:
        started = time.monotonic()
        timed_out = server.post(SLOW)
        assert timed_out.status_code == 504, timed_out.text
        assert "ATTENTION_REQUEST_TIMEOUT_S=0.5" in timed_out.json()["detail"]
        assert time.monotonic() - started < 3
        unready, refused = server.client.get("/readyz"), server.post(GOLDEN_LIKE)
        assert unready.status_code == 503
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1", refused.text
        assert "being replaced" in refused.json()["detail"]
        deadline = time.monotonic() + 120
        while server.client.get("/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert server.post(GOLDEN_LIKE).status_code == 200
        assert json.loads(server.client.get("/readyz").content)["status"] == "ready"


def test_replica_answers_the_open_inference_protocol_as_attend(replica):
    """/v2/models/attention/infer goes through the compute processes' own route table in the replica too."""
    import numpy as np
    import tritonclient.http as triton

    from tests.server.test_oip import CAT_WEIGHTS, GOLDEN, cat_inputs, client

    outputs = [triton.InferRequestedOutput(name, binary_data=False) for name in ("weights", "output")]
    result = client(replica).infer("attention", cat_inputs("FP32", binary=False), outputs=outputs)
    body = {"embeddings": GOLDEN["embeddings"], "weights": {k: v.tolist() for k, v in CAT_WEIGHTS.items()}}
    reference = replica.post(body).json()
    for name in ("weights", "output"):
        np.testing.assert_array_equal(result.as_numpy(name), np.array(reference[name], dtype=np.float32))


def test_replica_answers_safetensors_and_ndjson_the_stream_whole_and_limited_as_one_piece(replica):
    """The Accept header's formats on a replica: safetensors as the plain service writes it, NDJSON as the
    stream's lines joined into one answer; a stream too large to hold whole is a 413 there."""
    pipeline = InProcess.from_env({})
    text = {"text": "The cat ate the fish", "layer": [0, 5], "include": ["weights"]}
    binary = replica.post(text, headers={"accept": "application/x-safetensors"})
    assert binary.status_code == 200 and binary.headers["content-type"] == "application/x-safetensors"
    tensors, metadata = read_safetensors(binary.content)
    expected = pipeline.post(text).json()
    assert sorted(tensors) == ["layers.0.weights", "layers.5.weights"]
    for index, layer in zip((0, 5), expected["layers"], strict=True):
        np.testing.assert_allclose(tensors[f"layers.{index}.weights"], layer["weights"], atol=1e-5)
    assert json.loads(metadata["tokens"]) == expected["tokens"]
    lines = replica.post(text, headers={"accept": "application/x-ndjson"})
    assert lines.status_code == 200 and lines.headers["content-type"] == "application/x-ndjson"
    parsed = [json.loads(line) for line in lines.content.splitlines()]
    assert [line.get("layer") for line in parsed] == [None, 0, 5]
    expected = pipeline.post(text).json()
    assert _close(
        [line["weights"] for line in parsed[1:]], [layer["weights"] for layer in expected["layers"]]
    )
    too_large = {"text": " ".join(["word"] * 510), "layer": "all", "include": ["weights"]}
    refused = replica.post(too_large, headers={"accept": "application/x-ndjson"})
    assert refused.status_code == 413 and refused.json()["limit"] == "ATTENTION_MAX_RESPONSE_ELEMENTS"
