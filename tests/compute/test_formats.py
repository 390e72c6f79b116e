"""The response formats in process (service/compute/formats/): safetensors and NDJSON carry what the JSON
answer to the same request carries (values bit for bit, shapes, tokens, meta), read back with the
safetensors library and json; wire_dtype; streaming a layer at a time."""

from __future__ import annotations

import json

import numpy as np
import pytest

import service.compute.attention as attention
import service.compute.models.forward as forward
from service.compute.pipeline import PIECE
from service.protocol import ResponseFormat
from tests.support.formats import (
    assert_same_arrays,
    json_arrays,
    ndjson_response,
    read_safetensors,
    without_timing,
)

SENTENCES = ["The cat ate the fish because it was hungry", "Hi there"]
RNG = np.random.default_rng(7)
EXPLICIT = {  # masked (-inf) entries from the padding mask and causality, 3 heads, a batch of 2
    "embeddings": RNG.normal(size=(2, 5, 6)).tolist(),
    "num_heads": 3,
    "causal": True,
    "attention_mask": [[1, 1, 1, 0, 1], [1, 1, 1, 1, 1]],
    "weights": {"seed": 3},
}
REQUESTS = {
    "explicit": EXPLICIT,
    "explicit float64": {**EXPLICIT, "dtype": "float64"},
    "explicit bfloat16": {**EXPLICIT, "dtype": "bfloat16"},
    "direct q k v": {
        "query": [[1.0, 2.0]],
        "key": [[0.5, 0.1], [3.0, 1.0]],
        "value": [[1.0, 0.0], [0.0, 1.0]],
    },
    "toy": {"text": "a b a c", "model": "toy", "include": ["weights", "output"]},
    "model, layers out of order": {"text": SENTENCES, "layer": [4, 1]},
    "model, float64 recomputed": {"text": SENTENCES[0], "layer": 2, "dtype": "float64", "causal": True},
    "model, flow tensors sliced": {
        "text": SENTENCES,
        "layer": [3, 1],
        "include": ["weights", "rollout", "norms", "norms_summed", "value_zeroing"],
        "heads": [0, 5],
        "queries": [1, 2],
    },
}


def lines_of(compute, body) -> list[bytes]:
    frames = list(compute.stream(body))
    assert all(status == 200 for status, _, _ in frames), frames[-1]
    assert [last for _, _, last in frames] == [False] * (len(frames) - 1) + [True]
    assert frames[-1][1] == b""
    assert all(len(content) <= PIECE for _, content, _ in frames)
    lines = b"".join(content for _, content, _ in frames).split(b"\n")
    assert lines[-1] == b""  # each line ends with its newline
    return lines[:-1]


@pytest.mark.parametrize("name", REQUESTS)
def test_safetensors_carries_the_json_values_bit_for_bit(compute, name):
    body = REQUESTS[name]
    expected = compute.post(body).json()
    reply = compute.post(body, ResponseFormat.SAFETENSORS)
    assert reply.status_code == 200, reply.text
    tensors, metadata = read_safetensors(reply.content)
    assert_same_arrays(tensors, json_arrays(expected))
    meta = json.loads(metadata["meta"])
    assert without_timing(meta) == without_timing(expected["meta"])
    assert meta["wire_dtype"] == ("float64" if expected["meta"]["dtype"] == "float64" else "float32")
    assert (
        json.loads(metadata["tokens"]) == expected["tokens"]
        if "tokens" in expected
        else "tokens" not in metadata
    )


def test_safetensors_layers_are_named_by_the_models_layer_index(compute):
    tensors, _ = read_safetensors(
        compute.post({"text": "Hi", "layer": [5, 0], "include": ["q"]}, ResponseFormat.SAFETENSORS).content
    )
    assert sorted(tensors) == ["layers.0.q", "layers.5.q"]


def test_float16_on_the_wire_is_each_float32_value_rounded(compute):
    body = {**REQUESTS["model, layers out of order"], "wire_dtype": "float16"}
    tensors, metadata = read_safetensors(compute.post(body, ResponseFormat.SAFETENSORS).content)
    expected = json_arrays(compute.post(body).json())
    assert_same_arrays(tensors, {name: array.astype(np.float16) for name, array in expected.items()})
    assert json.loads(metadata["meta"])["wire_dtype"] == "float16"
    assert np.isneginf(tensors["layers.1.scaled_scores"]).any()  # the padding stays -inf


def test_a_float16_overflow_on_the_wire_is_a_422_naming_the_tensor(compute):
    body = {
        "embeddings": [[300.0, 0.0], [0.0, 1.0]],
        "weights": {"init": "identity"},
        "wire_dtype": "float16",
    }
    reply = compute.post(body, ResponseFormat.SAFETENSORS)
    assert reply.status_code == 422
    (error,) = reply.json()["detail"]
    assert error["loc"] == ["body", "wire_dtype"]
    assert "scores" in error["msg"] and "90000" in error["msg"] and "float32" in error["msg"]
    assert compute.post({**body, "wire_dtype": "float32"}, ResponseFormat.SAFETENSORS).status_code == 200


def test_decimals_round_json_but_never_binary(compute):
    body = {**EXPLICIT, "decimals": 2}
    tensors, _ = read_safetensors(compute.post(body, ResponseFormat.SAFETENSORS).content)
    unrounded = json_arrays(compute.post({**EXPLICIT}).json())
    assert_same_arrays(tensors, unrounded)


@pytest.mark.parametrize("name", REQUESTS)
def test_a_stream_carries_the_json_answer(compute, name):
    body = REQUESTS[name]
    expected = compute.post(body).json()
    streamed = ndjson_response(lines_of(compute, body))
    if "layers" in expected:  # a stream sends each layer once, as the forward pass reaches it
        expected["layers"] = sorted(expected["layers"], key=lambda layer: layer["layer"])
        expected["meta"]["layer"] = sorted(expected["meta"]["layer"])
    assert without_timing(streamed.pop("meta")) == without_timing(expected.pop("meta"))
    assert streamed == expected


def test_a_stream_sends_the_first_layer_before_the_next_is_computed(compute, monkeypatch):
    computed: list[int] = []  # one entry per layer's attention the model's forward pass has run
    attend_heads = attention.attend_heads

    def recorded(*args, **kwargs):
        computed.append(len(computed))
        return attend_heads(*args, **kwargs)

    monkeypatch.setattr(forward, "attend_heads", recorded)  # the name the forward pass calls
    frames = compute.stream({"text": SENTENCES, "layer": "all", "include": ["weights"]})
    first = next(frames)
    assert json.loads(first[1])["meta"]["layer"] == [0, 1, 2, 3, 4, 5] and computed == []
    layer_zero = json.loads(next(frames)[1])
    assert layer_zero["layer"] == 0 and computed == [0]
    rest = [json.loads(content) for _, content, last in frames if not last]
    assert [line["layer"] for line in rest] == [1, 2, 3, 4, 5] and computed == [0, 1, 2, 3, 4, 5]


def test_an_error_after_the_first_line_ends_the_stream_with_an_error_line(compute):
    # float16 with a scale of 1e4: the recomputed scaled scores of layer 0 overflow, after meta was sent
    frames = list(compute.stream({"text": SENTENCES[0], "dtype": "float16", "scale": 1e4, "layer": [0, 1]}))
    assert [status for status, _, _ in frames] == [200, 422]
    assert [last for _, _, last in frames] == [False, True]
    error = json.loads(frames[1][1])["error"]
    assert error["status"] == 422 and error["detail"][0]["loc"] == ["body", "dtype"]
    assert "layer 0" in error["detail"][0]["msg"] and "scaled_scores" in error["detail"][0]["msg"]


def test_an_error_before_the_first_line_is_the_answer(compute):
    ((status, content, last),) = list(compute.stream({"text": "Hi", "layer": 9}))
    assert (status, last) == (422, True)
    assert json.loads(content)["detail"][0]["loc"] == ["body", "layer"]


def test_a_512_token_text_streams_all_layers_of_weights_within_the_default_limits(compute):
    text = " ".join(["word"] * 510)  # 510 tokens and [CLS], [SEP]
    body = {"text": text, "layer": "all", "include": ["weights"]}
    refused = compute.post(body)
    assert refused.status_code == 413 and refused.json()["limit"] == "ATTENTION_MAX_RESPONSE_ELEMENTS"
    first, *lines = lines_of(compute, body)
    assert json.loads(first)["meta"]["seq"] == 512
    layers = []
    for line in lines:
        parsed = json.loads(line)
        layers.append(parsed["layer"])
        assert np.asarray(parsed["weights"], dtype=np.float32).shape == (1, 12, 512, 512)
    assert layers == [0, 1, 2, 3, 4, 5]
