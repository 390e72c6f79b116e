"""Request bodies and headers an attacker crafts (issue 21): bodies of numbers refused from a cheap count
before they are parsed, repeated layers, OIP JSON data nested against its shape, OIP infer bodies a web page
could send cross-site, CORS for the binary OIP extension, a huge model name, and a model folder whose weights
do not match its config. Over real HTTP to real servers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from safetensors.torch import load_file, save_file

from devtools.memory import PeakResident
from devtools.servers import Server
from tests.support.http import API_KEY, CORS_ORIGIN
from tests.support.models import save_tiny_bert

HEADER_LENGTH = "Inference-Header-Content-Length"
JSON = {"content-type": "application/json"}


def oip_error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text[:500]
    message: str = response.json()["error"]
    return message


# ---------------------------------------------------------------- 5: number bombs


@pytest.mark.slow
def test_a_body_of_millions_of_numbers_is_refused_from_its_commas_before_it_is_parsed(server: Server):
    """Issue 21 #5: 30 MB of zeros in one embeddings list (15M numbers, under the byte limit) is a 413 naming
    ATTENTION_MAX_REQUEST_NUMBERS, and the service's processes grow by far less than parsing it costs (about
    1.4 GB)."""
    zeros = b"0," * (15 * 2**20)
    body = b'{"embeddings": [[' + zeros + b"0]]}"
    with PeakResident(server.process.pid, period=0.02) as memory:
        response = server.post(body)
    assert response.status_code == 413, response.text[:500]
    assert response.json()["limit"] == "ATTENTION_MAX_REQUEST_NUMBERS", response.text[:500]
    assert memory.above_rest < 250, f"the processes grew by {memory.above_rest:.0f} MB"


def test_oip_json_data_of_millions_of_numbers_is_refused_before_it_is_parsed(server: Server):
    count = 6 * 2**20
    header = b'{"inputs": [{"name": "embeddings", "shape": [1, %d, 1], "datatype": "FP64", "data": [' % count
    body = header + b"0," * (count - 1) + b"0]}]}"
    response = server.client.post("/v2/models/attention/infer", content=body, headers=JSON)
    assert "ATTENTION_MAX_REQUEST_NUMBERS" in oip_error(response, 413)


def test_a_layer_asked_twice_is_a_422_not_computed_twice(server: Server):
    response = server.post({"text": "the cat sat", "layer": [1, 0, 1], "include": ["weights"]})
    assert response.status_code == 422, response.text[:500]
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", "layer"] and "a repeat of layer[0]" in error["msg"], error


# ---------------------------------------------------------------- 9: OIP data nested against its shape


@pytest.mark.parametrize(
    ("shape", "data", "expected"),
    [
        ([2, 2], [[1, 2, 3], [4]], "data[0] is a list of 3 items; expected a list of 2 items"),
        ([2, 3], [[1, 2], [3, 4], [5, 6]], "data is a list of 3 items; expected a list of 2 items"),
        ([1, 2, 2], [[1, 2], [3, 4]], "data is a list of 2 items; expected a list of 1 items"),
        ([3, 2], [1, [2, 3], 4], "data[0] is 1; expected a list of 2 items"),
        ([1, 3], [[1, [2, 3], 4]], "data[0][1] is a list; expected a single element"),
    ],
)
def test_oip_json_data_nested_against_its_shape_is_a_400_naming_the_input(
    server: Server, shape: list[int], data: Any, expected: str
):
    body = {"inputs": [{"name": "embeddings", "shape": shape, "datatype": "FP64", "data": data}]}
    response = server.client.post("/v2/models/attention/infer", content=json.dumps(body), headers=JSON)
    message = oip_error(response, 400)
    assert "input 'embeddings'" in message and expected in message, message


def test_oip_json_data_flat_or_nested_as_its_shape_is_read_alike(server: Server):
    flat = [1.0, 0.0, 0.0, 1.0, 0.5, 0.5]
    answers = []
    for data in (flat, [[flat[:2], flat[2:4], flat[4:]]]):
        body = {"inputs": [{"name": "embeddings", "shape": [1, 3, 2], "datatype": "FP64", "data": data}]}
        response = server.client.post("/v2/models/attention/infer", content=json.dumps(body), headers=JSON)
        assert response.status_code == 200, response.text
        answers.append({o["name"]: o["data"] for o in response.json()["outputs"]})
    assert answers[0] == answers[1]


# ---------------------------------------------------------------- 11, 12: cross-site OIP


def test_oip_infer_from_a_web_page_without_a_content_type_is_refused_415(server: Server):
    """Issue 21 #11: fetch(url, {method: "POST", mode: "no-cors", body: arrayBuffer}) from any page sends no
    Content-Type and no preflight, but Origin and Sec-Fetch-Mode: refused. Without them (tritonclient sends
    JSON with no Content-Type), or with Inference-Header-Content-Length (needs a preflight), computed."""
    body = json.dumps(
        {"inputs": [{"name": "embeddings", "shape": [2, 2], "datatype": "FP64", "data": [1, 0, 0, 1]}]}
    ).encode()
    url = "/v2/models/attention/infer"
    page = {"origin": "https://evil.example", "sec-fetch-mode": "no-cors", "sec-fetch-site": "cross-site"}
    refused = server.client.post(url, content=body, headers=page)
    assert "no Content-Type from a web page" in oip_error(refused, 415)
    null_origin = server.client.post(url, content=body, headers={"origin": "null"})
    assert null_origin.status_code == 415, null_origin.text
    plain = server.client.post(url, content=body)
    assert "content-type" not in plain.request.headers and plain.status_code == 200, plain.text
    binary = server.client.post(url, content=body, headers={**page, HEADER_LENGTH: str(len(body))})
    assert binary.status_code == 200, binary.text


def test_cors_lets_an_allowed_origin_use_the_binary_oip_extension(guarded: Server):
    """Issue 21 #12: the preflight for Inference-Header-Content-Length succeeds, and the answer's header of
    the same name is exposed to the page."""
    preflight = guarded.client.options(
        "/v2/models/attention/infer",
        headers={
            "origin": CORS_ORIGIN,
            "access-control-request-method": "POST",
            "access-control-request-headers": "content-type, x-api-key, inference-header-content-length",
        },
    )
    assert preflight.status_code == 200, preflight.text
    allowed = preflight.headers["access-control-allow-headers"].lower()
    assert "inference-header-content-length" in allowed, allowed
    header = {
        "inputs": [{"name": "embeddings", "shape": [2, 2], "datatype": "FP64", "data": [1, 0, 0, 1]}],
        "outputs": [{"name": "weights", "parameters": {"binary_data": True}}],
    }
    body = json.dumps(header).encode()
    answer = guarded.client.post(
        "/v2/models/attention/infer",
        content=body,
        headers={
            "origin": CORS_ORIGIN,
            "content-type": "application/octet-stream",
            "x-api-key": API_KEY,
            HEADER_LENGTH: str(len(body)),
        },
    )
    assert answer.status_code == 200 and HEADER_LENGTH.lower() in answer.headers, answer.text
    exposed = answer.headers["access-control-expose-headers"].lower()
    assert "inference-header-content-length" in exposed, exposed


# ---------------------------------------------------------------- 13: echoed model name


def test_a_huge_model_name_is_not_echoed_whole(server: Server):
    response = server.post({"text": "the cat", "model": "m" * 2**20})
    assert response.status_code == 422, response.text[:300]
    assert len(response.content) < 2000, f"a {len(response.content):,}-byte answer"
    assert "mmmm" in response.text  # still says what was found, cut


# ---------------------------------------------------------------- 10: weights that do not match the config


@pytest.mark.slow
def test_a_model_folder_missing_tensors_stops_the_start_naming_them_in_json_log_lines(tmp_path: Path):
    """Issue 21 #10: a tiny BERT whose weights file lacks layer 1's query projection (and holds one tensor
    it has no place for) would be served with random values there: the start fails naming both, and every
    line the service logs meanwhile is JSON."""
    folder = save_tiny_bert(tmp_path / "tiny")
    weights = folder / "model.safetensors"
    tensors = load_file(weights)
    missing = next(name for name in tensors if "layer.1.attention.self.query.weight" in name)
    del tensors[missing]
    tensors["extra.weight"] = tensors[next(iter(tensors))].clone()
    save_file(tensors, weights, metadata={"format": "pt"})
    log = tmp_path / "service.log"
    env = {"ATTENTION_MODELS": json.dumps({"tiny": str(folder)}), "ATTENTION_MAX_CONCURRENT": "1"}
    with pytest.raises(RuntimeError, match="exited"):
        Server(env, log=log, startup_timeout=120)
    lines = [line for line in log.read_bytes().splitlines() if line.strip()]
    assert lines
    not_json = []
    for line in lines:
        try:
            orjson.loads(line)
        except orjson.JSONDecodeError:
            not_json.append(line)
    assert not not_json, f"{len(not_json)} lines are not JSON, e.g. {not_json[:3]}"
    text = log.read_text()
    assert "'tiny'" in text and missing in text and "extra.weight" in text, text[-3000:]
