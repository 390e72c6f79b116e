"""The Open Inference Protocol v2 over a real server, spoken by a real third-party client (tritonclient.http,
NVIDIA's Triton client) and by hand (httpx, raw sockets): health, server and model metadata, infer with JSON
and binary tensors both ways against the golden worked example and against /attend's own answers, and every
way an infer request can fail to fit (400 with the protocol's {"error": ...}, never a read past the body)."""

from __future__ import annotations

import json
import socket
import struct
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from devtools.servers import Server
from service.server.openapi_examples import load_golden
from service.settings import BUNDLED_MODEL
from tests.support.http import API_KEY, GUARDED_MAX_REQUEST_BYTES

GOLDEN = load_golden("seed_cat_eats_fish")
HEADER_LENGTH = "Inference-Header-Content-Length"
CAT = np.array(GOLDEN["embeddings"])
CAT_WEIGHTS = {name: np.array(GOLDEN[f"{name}_in_out"]) for name in ("w_q", "w_k", "w_v")}
TEXTS = ["The cat ate the fish because it was hungry", "A dog barked"]


def client(srv: Server) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(srv.url.removeprefix("http://"), network_timeout=60)


def tensor(name: str, array: np.ndarray, datatype: str, binary: bool = True) -> triton.InferInput:
    given = triton.InferInput(name, list(array.shape), datatype)
    given.set_data_from_numpy(array, binary_data=binary)
    return given


def cat_inputs(datatype: str = "FP64", binary: bool = True) -> list[triton.InferInput]:
    dtype = np.float64 if datatype == "FP64" else np.float32
    arrays = {"embeddings": CAT, **CAT_WEIGHTS}
    return [tensor(name, array.astype(dtype), datatype, binary) for name, array in arrays.items()]


def texts_input(texts: list[str], binary: bool = True) -> triton.InferInput:
    return tensor("text", np.array([t.encode() for t in texts], dtype=np.object_), "BYTES", binary)


def attend(srv: Server, body: dict[str, Any]) -> dict[str, Any]:
    response = srv.post(body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def as_float32(values: Any) -> np.ndarray:
    """A JSON tensor of /attend as float32, null (masked) as -inf."""
    with_inf = np.vectorize(lambda v: -np.inf if v is None else v, otypes=[np.float64])
    array: np.ndarray = with_inf(np.array(values, dtype=object)).astype(np.float32)
    return array


# ---------------------------------------------------------------- health and metadata


def test_health_server_and_model_metadata(server):
    oip = client(server)
    assert oip.is_server_live() and oip.is_server_ready()
    assert oip.get_server_metadata()["extensions"] == ["binary_tensor_data"]
    attention = oip.get_model_metadata("attention")
    assert {i["name"] for i in attention["inputs"]} >= {"embeddings", "query", "w_q", "b_o", "attention_mask"}
    assert [o["name"] for o in attention["outputs"]] == [
        "q", "k", "v", "scores", "scaled_scores", "weights", "context", "output"
    ]  # fmt: skip
    minilm = oip.get_model_metadata(BUNDLED_MODEL, model_version="1")
    assert [i["name"] for i in minilm["inputs"]] == ["text"] and minilm["inputs"][0]["datatype"] == "BYTES"
    names = [o["name"] for o in minilm["outputs"]]
    assert "layers.0.q" in names and "layers.5.output" in names and "layers.6.q" not in names
    assert names[-1] == "tokens"
    assert oip.get_model_metadata("toy")["inputs"][0]["name"] == "text"
    for name in ("attention", BUNDLED_MODEL, "toy"):
        assert oip.is_model_ready(name)
    assert not oip.is_model_ready("nope")
    with pytest.raises(InferenceServerException, match="found model 'nope'; expected one of: attention"):
        oip.get_model_metadata("nope")
    with pytest.raises(InferenceServerException, match="no version '2'"):
        oip.get_model_metadata("attention", model_version="2")
    assert server.client.head("/v2/health/ready").status_code == 200


def test_oip_routes_have_their_own_metric_labels(server):
    server.client.get("/v2/models/attention")
    metrics = server.client.get("/metrics").text
    assert 'route="/v2/models/{name}"' in metrics


# ---------------------------------------------------------------- the embeddings path


@pytest.mark.parametrize("binary_inputs", [True, False])
def test_golden_example_through_tritonclient(server, binary_inputs):
    """The worked example in float64, binary outputs (tritonclient's default): every internal to 1e-9."""
    result = client(server).infer(
        "attention",
        cat_inputs("FP64", binary_inputs),
        request_id="cat-1",
        parameters={"dtype": "float64", "output_projection": False},
    )
    assert result.get_response()["id"] == "cat-1"
    expected = GOLDEN["expected"]
    for name in ("q", "k", "v", "scores", "scaled_scores", "weights", "context", "output"):
        if name not in expected:
            continue
        got = result.as_numpy(name)
        assert got.dtype == np.float64
        np.testing.assert_allclose(got.reshape(np.shape(expected[name])), expected[name], atol=1e-9)
    meta = json.loads(result.get_response()["parameters"]["meta"])
    assert meta["scale"] == pytest.approx(GOLDEN["scale"]) and meta["axes"]["weights"][0] == "batch"


def test_json_outputs_equal_attend_and_requested_outputs_select(server):
    """binary_data=False: outputs travel as JSON numbers, equal to /attend's JSON, and only those asked."""
    outputs = [triton.InferRequestedOutput(n, binary_data=False) for n in ("weights", "output")]
    result = client(server).infer("attention", cat_inputs("FP32", binary=False), outputs=outputs)
    response = result.get_response()
    assert [o["name"] for o in response["outputs"]] == ["weights", "output"]
    assert all("data" in o and "parameters" not in o for o in response["outputs"])
    reference = attend(
        server,
        {"embeddings": GOLDEN["embeddings"], "weights": {k: v.tolist() for k, v in CAT_WEIGHTS.items()}},
    )
    for name in ("weights", "output"):
        np.testing.assert_array_equal(result.as_numpy(name), np.array(reference[name], dtype=np.float32))


def test_binary_outputs_are_bit_for_bit_attend_with_minus_inf_where_masked(server):
    """float32, causal, a padding mask (BOOL): every tensor equals /attend's JSON value for value as float32,
    and masked scaled scores are -inf (null in /attend's JSON and in the JSON outputs)."""
    rng = np.random.default_rng(3)
    embeddings = rng.standard_normal((2, 5, 8)).astype(np.float32)
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=bool)
    inputs = [tensor("embeddings", embeddings, "FP32"), tensor("attention_mask", mask, "BOOL")]
    parameters = {"num_heads": 2, "causal": True, "seed": 7, "init": "normal"}
    result = client(server).infer("attention", inputs, parameters=parameters)
    reference = attend(
        server,
        {
            "embeddings": embeddings.astype(np.float64).tolist(),
            "attention_mask": mask.astype(int).tolist(),
            "num_heads": 2,
            "causal": True,
            "weights": {"seed": 7, "init": "normal"},
        },
    )
    for name in ("q", "k", "v", "scores", "scaled_scores", "weights", "context", "output"):
        got = result.as_numpy(name)
        assert got.dtype == np.float32 and list(got.shape) == reference["meta"]["shapes"][name]
        np.testing.assert_array_equal(got, as_float32(reference[name]))
    scaled = result.as_numpy("scaled_scores")
    assert np.isneginf(scaled[0, 0, 0, 1]) and np.isneginf(scaled[1, 1, 4, 3])
    as_json = client(server).infer(
        "attention",
        inputs,
        parameters=parameters,
        outputs=[triton.InferRequestedOutput("scaled_scores", binary_data=False)],
    )
    data = as_json.get_response()["outputs"][0]["data"]
    assert data[1] is None and sum(v is None for v in data) == int(np.isneginf(scaled).sum())


def test_mask_datatypes_agree(server):
    embeddings = np.random.default_rng(4).standard_normal((2, 3, 4))
    mask = np.array([[1, 1, 0], [1, 0, 0]])
    answers = []
    for datatype, array in (("BOOL", mask.astype(bool)), ("INT64", mask), ("FP64", mask.astype(float))):
        result = client(server).infer(
            "attention", [tensor("embeddings", embeddings, "FP64"), tensor("attention_mask", array, datatype)]
        )
        answers.append(result.as_numpy("weights"))
    np.testing.assert_array_equal(answers[0], answers[1])
    np.testing.assert_array_equal(answers[0], answers[2])
    assert answers[0][1, 0, :, 1:].max() == 0.0  # the masked keys of the second row get no weight


def test_query_key_value_form(server):
    rng = np.random.default_rng(5)
    q, k, v = (rng.standard_normal((4, 6)) for _ in range(3))
    inputs = [tensor(n, a, "FP64") for n, a in (("query", q), ("key", k), ("value", v))]
    result = client(server).infer("attention", inputs, parameters={"num_heads": 2, "dtype": "float64"})
    reference = attend(
        server,
        {"query": q.tolist(), "key": k.tolist(), "value": v.tolist(), "num_heads": 2, "dtype": "float64"},
    )
    np.testing.assert_array_equal(result.as_numpy("context"), np.array(reference["context"]))


# ---------------------------------------------------------------- text models


def test_minilm_layers_and_tokens_equal_attend(server):
    """A padded batch of two texts through MiniLM: layers as layers.{i}.weights, tokens as BYTES, binary and
    JSON, equal to /attend's answer for the same texts."""
    outputs = [
        triton.InferRequestedOutput("layers.1.weights"),
        triton.InferRequestedOutput("layers.4.weights", binary_data=False),
        triton.InferRequestedOutput("tokens"),
    ]
    result = client(server).infer(BUNDLED_MODEL, [texts_input(TEXTS)], outputs=outputs)
    assert [o["name"] for o in result.get_response()["outputs"]] == [o.name() for o in outputs]
    reference = attend(server, {"text": TEXTS, "layer": [1, 4], "include": ["weights"]})
    for index, layer in enumerate((1, 4)):
        expected = np.array(reference["layers"][index]["weights"], dtype=np.float32)
        np.testing.assert_array_equal(result.as_numpy(f"layers.{layer}.weights"), expected)
    tokens = result.as_numpy("tokens")
    seq = max(reference["meta"]["lengths"])
    assert tokens.shape == (2, seq)
    padded = [row + [""] * (seq - len(row)) for row in reference["tokens"]]  # "" at padded positions
    assert [[t.decode() for t in row] for row in tokens] == padded
    meta = json.loads(result.get_response()["parameters"]["meta"])
    assert meta["layer"] == [1, 4] and meta["padded"] is True


def test_flow_outputs_of_a_layer_equal_attend(server):
    """rollout, norms, norms_summed and value_zeroing as layers.{i}.{name} outputs, binary and JSON, equal to
    /attend's answer; the `attention` model has no layers to follow (400 saying so)."""
    names = ["rollout", "norms", "norms_summed", "value_zeroing"]
    outputs = [triton.InferRequestedOutput(f"layers.2.{n}", binary_data=n != "norms") for n in names]
    result = client(server).infer(BUNDLED_MODEL, [texts_input(TEXTS)], outputs=outputs)
    reference = attend(server, {"text": TEXTS, "layer": 2, "include": names})["layers"][0]
    for name in names:
        np.testing.assert_array_equal(
            result.as_numpy(f"layers.2.{name}"), np.array(reference[name], dtype=np.float32)
        )
    metadata = client(server).get_model_metadata(BUNDLED_MODEL)
    assert {f"layers.5.{n}" for n in names} <= {o["name"] for o in metadata["outputs"]}
    with pytest.raises(InferenceServerException, match="need a model's layers"):
        client(server).infer("attention", cat_inputs(), outputs=[triton.InferRequestedOutput("rollout")])


def test_text_in_json_with_every_output_of_every_layer(server):
    """No outputs named: every tensor of every layer (layer "all"), JSON as asked by binary_data_output."""
    body = {
        "inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["the cat sat"]}],
        "parameters": {"binary_data_output": False, "decimals": 3},
    }
    response = server.client.post(f"/v2/models/{BUNDLED_MODEL}/infer", json=body)
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    assert HEADER_LENGTH.lower() not in response.headers
    names = [o["name"] for o in response.json()["outputs"]]
    assert len(names) == 6 * 8 + 1 and names[:2] == ["layers.0.q", "layers.0.k"] and names[-1] == "tokens"
    q = response.json()["outputs"][0]
    assert q["shape"] == [1, 12, 5, 32] and all(round(v, 3) == v for v in q["data"])


def test_toy_model_with_explicit_weights(server):
    weights = np.eye(4)
    inputs = [texts_input(["a b a"]), *(tensor(n, weights, "FP64") for n in ("w_q", "w_k", "w_v"))]
    result = client(server).infer("toy", inputs, parameters={"d_model": 4, "seed": 2})
    reference = attend(
        server,
        {
            "text": ["a b a"],
            "model": "toy",
            "d_model": 4,
            "weights": {"w_q": weights.tolist(), "w_k": weights.tolist(), "w_v": weights.tolist(), "seed": 2},
        },
    )
    np.testing.assert_array_equal(result.as_numpy("weights"), as_float32(reference["weights"]))
    assert [t.decode() for t in result.as_numpy("tokens")[0]] == ["a", "b", "a"]


# ---------------------------------------------------------------- requests that do not fit


def binary_request(header: dict[str, Any], *data: bytes) -> tuple[bytes, int]:
    head = json.dumps(header).encode()
    return head + b"".join(data), len(head)


def infer_raw(srv: Server, body: bytes, length: int | str | None, model: str = "attention") -> httpx.Response:
    headers = {"content-type": "application/octet-stream"}
    if length is not None:
        headers[HEADER_LENGTH] = str(length)
    return srv.client.post(f"/v2/models/{model}/infer", content=body, headers=headers)


def error_of(response: httpx.Response, status: int = 400) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    message: str = body["error"]
    return message


CAT32 = CAT.astype(np.float32)
CAT_HEADER = {"inputs": [{"name": "embeddings", "shape": [3, 4], "datatype": "FP32", "parameters": {}}]}


def cat_binary(
    size: int | None = None, shape: list[int] | None = None, datatype: str = "FP32"
) -> dict[str, Any]:
    entry = {
        "name": "embeddings",
        "shape": shape or [3, 4],
        "datatype": datatype,
        "parameters": {"binary_data_size": 48 if size is None else size},
    }
    return {"inputs": [entry]}


def test_a_valid_raw_binary_request_and_binary_response(server):
    body, length = binary_request(cat_binary(), CAT32.tobytes())
    response = infer_raw(server, body, length)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"  # no output asked binary
    response = infer_raw(
        server, *binary_request({**cat_binary(), "parameters": {"binary_data_output": True}}, CAT32.tobytes())
    )
    header_length = int(response.headers[HEADER_LENGTH])
    header = json.loads(response.content[:header_length])
    sizes = [o["parameters"]["binary_data_size"] for o in header["outputs"]]
    assert header_length + sum(sizes) == len(response.content)
    assert response.headers["content-type"] == "application/octet-stream"


@pytest.mark.parametrize(
    ("length", "expected"),
    [
        ("-5", "found Inference-Header-Content-Length '-5'"),
        ("abc", "found Inference-Header-Content-Length 'abc'"),
        ("1e2", "'1e2'"),
        ("+10", "'+10'"),
        ("0", "expected a decimal number of bytes from 1"),
        ("99999999999999999999999", "expected a decimal number of bytes"),
        ("BODY+1", "to the body's length"),
    ],
)
def test_header_length_that_does_not_fit_the_body_is_400(server, length, expected):
    body, _ = binary_request(cat_binary(), CAT32.tobytes())
    declared = str(len(body) + 1) if length == "BODY+1" else length
    assert expected in error_of(infer_raw(server, body, declared))


@pytest.mark.parametrize(
    ("header", "data", "expected"),
    [
        (cat_binary(size=40), CAT32.tobytes()[:40], "expected 12 elements x 4 bytes = 48"),
        (cat_binary(size=96, datatype="FP64"), CAT32.tobytes() * 2, None),  # FP64 data of the right size
        (cat_binary(size=48, datatype="FP64"), CAT32.tobytes(), "expected 12 elements x 8 bytes = 96"),
        (cat_binary(size=48, shape=[4, 4]), CAT32.tobytes(), "expected 16 elements x 4 bytes = 64"),
        (cat_binary(size=1000), CAT32.tobytes(), "binary_data_size is 1000 but only 48 byte(s)"),
        (cat_binary(), CAT32.tobytes() + b"junk", "found 4 byte(s) after the JSON header"),
        (cat_binary(size=-1), CAT32.tobytes(), "expected a number of bytes"),
        (cat_binary(datatype="INT64", size=96), CAT.astype(np.int64).tobytes(), "expected FP32 or FP64"),
        (cat_binary(datatype="FP16", size=24), CAT.astype(np.float16).tobytes(), "found datatype 'FP16'"),
        (cat_binary(shape=[-3, -4]), CAT32.tobytes(), "expected sizes of at least 0"),
        (cat_binary(shape=[1, 3, 4, 1]), CAT32.tobytes(), "input 'embeddings': expected [seq, d_model]"),
        (cat_binary(size=0, shape=[0, 4]), b"", "found shape [0, 4] with an empty axis"),
        (cat_binary(), np.full(12, np.nan, np.float32).tobytes(), "element 0 is nan; expected a finite"),
    ],
)
def test_binary_input_that_does_not_fit_is_400(server, header, data, expected):
    response = infer_raw(server, *binary_request(header, data))
    if expected is None:
        assert response.status_code == 200, response.text
    else:
        assert expected in error_of(response)


def json_input(name: str, shape: list[Any], datatype: str, data: Any) -> dict[str, Any]:
    return {"inputs": [{"name": name, "shape": shape, "datatype": datatype, "data": data}]}


@pytest.mark.parametrize(
    ("model", "body", "expected"),
    [
        (
            "attention",
            json_input("embeddings", [3, 4], "FP32", [1.0] * 11),
            "found 11 elements in data; expected 12",
        ),
        ("attention", json_input("embeddings", [2, 2], "FP32", ["1", 2, 3, 4]), "data element 0 is '1'"),
        ("attention", json_input("embeddings", [2, 2], "FP32", [True, 2, 3, 4]), "data element 0 is true"),
        ("attention", json_input("embeddings", [2, 2], "FP32", [1e39, 2, 3, 4]), "within FP32 range"),
        ("attention", json_input("embeddings", [2, 2], "FP32", None), "has neither data nor"),
        ("attention", json_input("text", [1], "BYTES", ["hi"]), "input 'text' is not an input of model"),
        (BUNDLED_MODEL, json_input("text", [1, 1], "BYTES", ["hi"]), "expected [n], one element per text"),
        (BUNDLED_MODEL, json_input("text", [1], "BYTES", [3]), "data element 0 is 3; expected a string"),
        (BUNDLED_MODEL, json_input("embeddings", [1, 1], "FP32", [1]), "not an input of model"),
        ("attention", {"inputs": []}, "inputs: List should have at least 1 item"),
        ("attention", json_input("embeddings", [2.5, 2], "FP32", [1] * 4), "inputs.0.shape.0: Input should"),
        (  # numpy cannot shape an empty array whose other axes multiply past its address space
            "attention",
            json_input("b_k", [1986, 159047, 5154497, 9279046, 98510, 79989162, 0], "FP64", []),
            "input 'b_k': found shape [1986, 159047, 5154497, 9279046, 98510, 79989162, 0] with an empty",
        ),
        ("attention", json_input("embeddings", ["2", 2], "FP32", [1] * 4), "inputs.0.shape.0: Input should"),
        ("attention", {"inputs": [{"name": "embeddings"}]}, "inputs.0.shape: Field required"),
        ("attention", b"{not json", "the JSON header is not valid JSON"),
        (
            "attention",
            {**json_input("embeddings", [2, 2], "FP32", [1, 2, 3, 4]), "parameters": {"num_heads": 3}},
            "parameters.num_heads",
        ),
        (
            "attention",
            {**json_input("embeddings", [2, 2], "FP32", [1, 2, 3, 4]), "parameters": {"colour": "red"}},
            "found parameters.colour",
        ),
        (
            "attention",
            {**json_input("embeddings", [2, 2], "FP32", [1, 2, 3, 4]), "outputs": [{"name": "layers.0.q"}]},
            "output 'layers.0.q' is not an output of model 'attention'",
        ),
        (
            BUNDLED_MODEL,
            {**json_input("text", [1], "BYTES", ["hi"]), "outputs": [{"name": "layers.9.q"}]},
            "parameters.layer: found layer 9",
        ),
        (
            "attention",
            {
                "inputs": [
                    *json_input("embeddings", [1, 2, 2], "FP32", [1] * 4)["inputs"],
                    *json_input("attention_mask", [1, 2], "INT64", [1, 5])["inputs"],
                ]
            },
            "input 'attention_mask': found the value 5; expected only 0 (masked) and 1",
        ),
    ],
)
def test_json_request_that_does_not_fit_is_400(server, model, body, expected):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = server.client.post(f"/v2/models/{model}/infer", content=content)
    assert expected in error_of(response)


def test_a_shape_of_integral_floats_is_the_shape_of_their_integers(server):
    """The document's shape items are JSON Schema integers, which 3.0 is (schemathesis sends such bodies)."""
    as_floats = json_input("embeddings", [3.0, 4.0], "FP64", CAT.reshape(-1).tolist())
    as_ints = json_input("embeddings", [3, 4], "FP64", CAT.reshape(-1).tolist())
    answers = [server.client.post("/v2/models/attention/infer", json=body) for body in (as_floats, as_ints)]
    assert [answer.status_code for answer in answers] == [200, 200]
    assert answers[0].json()["outputs"] == answers[1].json()["outputs"]


def test_bytes_binary_lengths_cannot_run_past_their_data(server):
    good = struct.pack("<I", 5) + b"hello"
    text: dict[str, Any] = {"name": "text", "shape": [1], "datatype": "BYTES", "parameters": {}}
    text["parameters"]["binary_data_size"] = 9
    header = {"inputs": [text]}
    body, length = binary_request(header, struct.pack("<I", 500) + b"hello")
    assert "declares 500 bytes but only 5 remain" in error_of(infer_raw(server, body, length, BUNDLED_MODEL))
    text["parameters"]["binary_data_size"] = len(good) * 2
    body, length = binary_request(header, good * 2)
    assert "holds more than 1 element" in error_of(infer_raw(server, body, length, BUNDLED_MODEL))
    text["parameters"]["binary_data_size"] = 3
    body, length = binary_request(header, b"\x01\x00\x00")
    assert "expected a 4-byte length" in error_of(infer_raw(server, body, length, BUNDLED_MODEL))


def test_bool_bytes_other_than_0_and_1_are_400(server):
    header = {
        "inputs": [
            {"name": "embeddings", "shape": [1, 2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]},
            {
                "name": "attention_mask",
                "shape": [1, 2],
                "datatype": "BOOL",
                "parameters": {"binary_data_size": 2},
            },
        ]
    }
    body, length = binary_request(header, b"\x01\x07")
    assert "byte 1 of its BOOL data is 7" in error_of(infer_raw(server, body, length))


def test_unknown_model_and_version_are_404_and_compression_and_forms_415(server):
    body, length = binary_request(cat_binary(), CAT32.tobytes())
    assert "found model 'bert'" in error_of(infer_raw(server, body, length, "bert"), 404)
    versioned = server.client.post("/v2/models/attention/versions/7/infer", content=body)
    assert "no version '7'" in error_of(versioned, 404)
    for headers in ({"content-type": "text/plain"}, {"content-encoding": "gzip"}):
        response = server.client.post("/v2/models/attention/infer", content=body, headers=headers)
        assert error_of(response, 415)


def test_the_header_length_never_reads_past_the_body_on_a_kept_alive_connection(server):
    """Over one raw connection: a request whose binary header claims more bytes than its body, then a second
    request; the first is a 400 and the second is answered as itself (the server never read into it)."""
    body, _ = binary_request(cat_binary(), CAT32.tobytes())
    second = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n"
    first = (
        f"POST /v2/models/attention/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
        f"{HEADER_LENGTH}: {len(body) + len(second)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(first + body + second)
        received = b""
        while received.count(b"HTTP/1.1 ") < 2 or not received.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    answers = received.split(b"HTTP/1.1 ")[1:]
    assert answers[0].startswith(b"400") and b"to the body's length" in answers[0]
    assert answers[1].startswith(b"200") and answers[1].endswith(b'{"live":true}')


def test_guarded_server_refuses_with_the_protocols_error_body(guarded):
    """API keys and the body's byte limit apply to OIP as to /attend; the refusals are {"error": ...}."""
    assert "missing API key" in error_of(guarded.client.get("/v2/models/attention"), 401)
    assert guarded.client.get("/v2/health/live").status_code == 200  # probes stay open
    big = np.zeros((1, 1000, 8), dtype=np.float32)  # 32,000 bytes > 20,000
    header = {"inputs": [{"name": "embeddings", "shape": [1, 1000, 8], "datatype": "FP32",
                          "parameters": {"binary_data_size": big.nbytes}}]}  # fmt: skip
    body, length = binary_request(header, big.tobytes())
    response = guarded.client.post(
        "/v2/models/attention/infer", content=body, headers={HEADER_LENGTH: str(length), "x-api-key": API_KEY}
    )
    assert f"ATTENTION_MAX_REQUEST_BYTES={GUARDED_MAX_REQUEST_BYTES:,}" in error_of(response, 413)
    keyed = triton.InferenceServerClient(guarded.url.removeprefix("http://"))
    result = keyed.infer("attention", cat_inputs("FP32"), headers={"x-api-key": API_KEY})
    assert result.as_numpy("weights").shape == (1, 1, 3, 3)


def test_limits_are_checked_before_computing(server):
    """64 x 4096 queries and keys: scores over ATTENTION_MAX_RESPONSE_ELEMENTS, a 413 decided from the shapes
    before any tensor is computed, as for /attend."""
    size = 64 * 4096 * 4
    header = {
        "inputs": [
            {"name": n, "shape": [64, 4096, 1], "datatype": "FP32", "parameters": {"binary_data_size": size}}
            for n in ("query", "key", "value")
        ]
    }
    body, length = binary_request(header, *(bytes(size) for _ in range(3)))
    assert "over the limit ATTENTION_MAX" in error_of(infer_raw(server, body, length), 413)


def test_wire_dtype_heads_and_queries_pass_as_parameters(server):
    """wire_dtype float16 gives FP16 outputs (each value float32's nearest float16), heads and queries cut
    them as /attend does; all three echoed in meta."""
    outputs = [triton.InferRequestedOutput("layers.2.weights")]
    parameters = {"wire_dtype": "float16", "heads": [1, 5], "queries": [0, 2]}
    result = client(server).infer(BUNDLED_MODEL, [texts_input(TEXTS)], outputs=outputs, parameters=parameters)
    (described,) = result.get_response()["outputs"]
    assert described["datatype"] == "FP16"
    reference = attend(
        server, {"text": TEXTS, "layer": 2, "include": ["weights"], "heads": [1, 5], "queries": [0, 2]}
    )
    expected = np.array(reference["layers"][0]["weights"], dtype=np.float32).astype(np.float16)
    got = result.as_numpy("layers.2.weights")
    assert got.dtype == np.float16 and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)
    meta = json.loads(result.get_response()["parameters"]["meta"])
    assert (meta["wire_dtype"], meta["heads"], meta["queries"]) == ("float16", [1, 5], [0, 2])
