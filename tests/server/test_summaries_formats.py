"""The summaries in every format over a real server: JSON (top_keys as integers), safetensors (top_keys
int64, the rest float32, bit for bit what JSON carries), NDJSON (one line per layer), and the Open Inference
Protocol's outputs through NVIDIA's Triton client (top_keys INT64)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import tritonclient.http as triton

from schemas.axes import SUMMARY_NAMES
from service.settings import BUNDLED_MODEL
from tests.support.formats import ndjson_response, read_safetensors, without_timing

SAFETENSORS, NDJSON = "application/x-safetensors", "application/x-ndjson"
TEXTS = ["The cat sat on the mat and the cat slept", "A dog barked"]
BODY = {"text": TEXTS, "layer": [0, 3], "include": list(SUMMARY_NAMES), "top_k": 3}


def json_answer(server) -> dict[str, Any]:
    response = server.post(BODY)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def test_json_carries_top_keys_as_integers_with_their_axes(server):
    answer = json_answer(server)
    layer = answer["layers"][0]
    keys = layer["top_keys"]
    assert all(isinstance(key, int) for key in keys[0][0][0])
    seq = answer["meta"]["seq"]
    assert np.asarray(keys).shape == (2, 12, seq, 3)
    assert answer["meta"]["axes"]["top_keys"] == ["batch", "head", "query_pos", "rank"]
    assert answer["meta"]["blocked"] is True and answer["meta"]["pool"] == 1
    assert np.asarray(layer["induction_score"]).shape == (2, 12)


def test_safetensors_carries_the_json_summaries(server):
    answer = json_answer(server)
    response = server.post(BODY, headers={"accept": SAFETENSORS})
    assert response.status_code == 200, response.text
    tensors, metadata = read_safetensors(response.content)
    assert sorted(tensors) == sorted(f"layers.{i}.{name}" for i in (0, 3) for name in SUMMARY_NAMES)
    for entry in answer["layers"]:
        for name in SUMMARY_NAMES:
            found = tensors[f"layers.{entry['layer']}.{name}"]
            if name == "top_keys":
                assert found.dtype == np.int64
                np.testing.assert_array_equal(found, np.asarray(entry[name]))
            else:
                assert found.dtype == np.float32
                np.testing.assert_array_equal(found, np.asarray(entry[name], dtype=np.float32))
    assert without_timing(json.loads(metadata["meta"])) == without_timing(answer["meta"])


def test_a_stream_sends_each_layers_summaries_on_its_line(server):
    answer = json_answer(server)
    headers = {"content-type": "application/json", "accept": NDJSON}
    with server.client.stream("POST", "/attend", content=json.dumps(BODY), headers=headers) as response:
        assert response.status_code == 200
        lines = [line.encode() for line in response.iter_lines() if line]
    assert len(lines) == 3
    streamed = ndjson_response(lines)
    assert streamed["layers"] == answer["layers"]


def test_open_inference_protocol_outputs(server):
    answer = json_answer(server)
    client = triton.InferenceServerClient(server.url.removeprefix("http://"), network_timeout=60)
    text = triton.InferInput("text", [2], "BYTES")
    text.set_data_from_numpy(np.array([t.encode() for t in TEXTS], dtype=np.object_))
    outputs = [
        triton.InferRequestedOutput("layers.3.top_keys"),
        triton.InferRequestedOutput("layers.3.entropy", binary_data=False),
        triton.InferRequestedOutput("layers.0.sink_score"),
    ]
    result = client.infer(BUNDLED_MODEL, [text], outputs=outputs, parameters={"top_k": 3})
    described = {o["name"]: o for o in result.get_response()["outputs"]}
    assert described["layers.3.top_keys"]["datatype"] == "INT64"
    layers = {entry["layer"]: entry for entry in answer["layers"]}
    np.testing.assert_array_equal(result.as_numpy("layers.3.top_keys"), np.asarray(layers[3]["top_keys"]))
    np.testing.assert_array_equal(
        result.as_numpy("layers.3.entropy"), np.asarray(layers[3]["entropy"], dtype=np.float32)
    )
    np.testing.assert_array_equal(
        result.as_numpy("layers.0.sink_score"), np.asarray(layers[0]["sink_score"], dtype=np.float32)
    )
