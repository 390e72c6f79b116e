"""The Open Inference Protocol v2 spoken to a real server by KServe's own REST client
(kserve.InferenceRESTClient, KServe's Python SDK), unchanged: health and readiness, infer with JSON and
binary tensors both ways for the embeddings path and a text model, against the golden worked example and
/attend's own answers; a request that does not fit raises the client's error (httpx.HTTPStatusError)
carrying the service's message. The metadata, which KServe's REST client has no call for, and a JSON answer
are read with KServe's own models of the protocol (kserve.protocol.rest.v2_datamodels).

kserve is imported when a test first needs it (tests/support/kserve.py: pytest's sys.argv would end the
session at collection)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
import numpy as np
import pytest

from devtools.servers import Server
from service.settings import BUNDLED_MODEL
from tests.server.test_oip import CAT, CAT_WEIGHTS, GOLDEN, HEADER_LENGTH, TEXTS, as_float32, attend
from tests.support.kserve import kserve

if TYPE_CHECKING:
    from kserve import InferenceRESTClient, InferInput, InferResponse
    from kserve.protocol.infer_type import RequestedOutput

T = TypeVar("T")
TENSORS = ("q", "k", "v", "scores", "scaled_scores", "weights", "context", "output")


def requested(name: str, parameters: dict[str, Any] | None = None) -> RequestedOutput:
    output: RequestedOutput = kserve().protocol.infer_type.RequestedOutput(name, parameters)
    return output


def kserve_models() -> ModuleType:
    models: ModuleType = kserve().protocol.rest.v2_datamodels
    return models


def with_client(scenario: Callable[[InferenceRESTClient], Awaitable[T]]) -> T:
    """`scenario` run with a KServe REST client for the protocol v2 (the client is asynchronous only)."""

    async def main() -> T:
        async with kserve().InferenceRESTClient(kserve().RESTConfig(protocol="v2", timeout=60)) as client:
            return await scenario(client)

    return asyncio.run(main())


def infer(
    srv: Server,
    model: str,
    inputs: list[InferInput],
    *,
    parameters: dict[str, Any] | None = None,
    outputs: list[RequestedOutput] | None = None,
    request_id: str | None = None,
) -> tuple[InferResponse, dict[str, str]]:
    """The client's answer and the HTTP response's headers."""
    request = kserve().InferRequest(model, inputs, request_id, parameters=parameters, request_outputs=outputs)
    headers: dict[str, str] = {}

    async def scenario(client: InferenceRESTClient) -> InferResponse:
        answer: InferResponse = await client.infer(srv.url, request, model, response_headers=headers)
        return answer

    return with_client(scenario), {name.lower(): value for name, value in headers.items()}


def tensor(name: str, array: np.ndarray, datatype: str, binary: bool = True) -> InferInput:
    given: InferInput = kserve().InferInput(name, list(array.shape), datatype)
    given.set_data_from_numpy(array, binary_data=binary)
    return given


def texts_input(texts: list[str], binary: bool = True) -> InferInput:
    return tensor("text", np.array([t.encode() for t in texts], dtype=np.object_), "BYTES", binary)


def output(response: InferResponse, name: str) -> np.ndarray:
    found = response.get_output_by_name(name)
    assert found is not None, f"no output {name!r} in {[o.name for o in response.outputs]}"
    array: np.ndarray = found.as_numpy()
    return array


def assert_binary(headers: dict[str, str], binary: bool) -> None:
    """Whether the answer carried binary data after its JSON header (the client hides which it was)."""
    assert headers["content-type"] == ("application/octet-stream" if binary else "application/json")
    assert (HEADER_LENGTH.lower() in headers) == binary


# ---------------------------------------------------------------- health and metadata


def test_health_readiness_and_metadata(server):
    async def scenario(client: InferenceRESTClient) -> list[bool]:
        return [
            await client.is_server_live(server.url),
            await client.is_server_ready(server.url),
            *[await client.is_model_ready(server.url, name) for name in ("attention", BUNDLED_MODEL, "toy")],
            await client.is_model_ready(server.url, "nope"),
        ]

    assert with_client(scenario) == [True, True, True, True, True, False]
    metadata = kserve_models().ServerMetadataResponse.model_validate(server.client.get("/v2").json())
    assert metadata.extensions == ["binary_tensor_data"]
    attention = kserve_models().ModelMetadataResponse.model_validate(
        server.client.get("/v2/models/attention").json()
    )
    assert [o.name for o in attention.outputs] == list(TENSORS)
    minilm = kserve_models().ModelMetadataResponse.model_validate(
        server.client.get(f"/v2/models/{BUNDLED_MODEL}").json()
    )
    assert [(i.name, i.datatype) for i in minilm.inputs] == [("text", "BYTES")]
    assert minilm.outputs[-1].name == "tokens" and minilm.versions == ["1"]


# ---------------------------------------------------------------- the embeddings path


@pytest.mark.parametrize("binary", [True, False])
def test_golden_example_through_kserve(server, binary):
    """The worked example in float64, inputs and outputs binary or JSON: every internal to 1e-9."""
    inputs = [
        tensor(name, array, "FP64", binary) for name, array in {"embeddings": CAT, **CAT_WEIGHTS}.items()
    ]
    parameters = {"dtype": "float64", "output_projection": False, "binary_data_output": binary}
    response, headers = infer(server, "attention", inputs, parameters=parameters, request_id="cat-1")
    assert_binary(headers, binary)
    assert (response.id, response.model_name) == ("cat-1", "attention")
    for name, expected in GOLDEN["expected"].items():
        got = output(response, name)
        assert got.dtype == np.float64
        np.testing.assert_allclose(got.reshape(np.shape(expected)), expected, atol=1e-9)
    assert response.parameters is not None
    assert json.loads(response.parameters["meta"])["scale"] == pytest.approx(GOLDEN["scale"])


def masked_request() -> tuple[list[InferInput], dict[str, Any], dict[str, Any]]:
    """Two causal float32 rows, the second padded (a BOOL mask): KServe's inputs and parameters, and the same
    request for /attend."""
    rng = np.random.default_rng(3)
    embeddings = rng.standard_normal((2, 5, 8)).astype(np.float32)
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=bool)
    inputs = [tensor("embeddings", embeddings, "FP32"), tensor("attention_mask", mask, "BOOL")]
    parameters = {"num_heads": 2, "causal": True, "seed": 7, "init": "normal"}
    body = {
        "embeddings": embeddings.astype(np.float64).tolist(),
        "attention_mask": mask.astype(int).tolist(),
        "num_heads": 2,
        "causal": True,
        "weights": {"seed": 7, "init": "normal"},
    }
    return inputs, parameters, body


def test_binary_outputs_are_bit_for_bit_attend_and_json_outputs_equal_it(server):
    """Binary inputs; binary outputs equal /attend's JSON as float32 with -inf where it has null (masked),
    JSON outputs equal it with NaN there (KServe's client reads JSON's null as NaN)."""
    inputs, parameters, body = masked_request()
    reference = attend(server, body)
    binary, binary_headers = infer(
        server, "attention", inputs, parameters={**parameters, "binary_data_output": True}
    )
    as_json, json_headers = infer(server, "attention", inputs, parameters=parameters)
    assert_binary(binary_headers, True)
    assert_binary(json_headers, False)
    for name in TENSORS:
        expected = as_float32(reference[name])
        got = output(binary, name)
        assert got.dtype == np.float32 and list(got.shape) == reference["meta"]["shapes"][name]
        np.testing.assert_array_equal(got, expected)
        np.testing.assert_array_equal(
            output(as_json, name), np.where(np.isneginf(expected), np.nan, expected)
        )
    scaled = output(binary, "scaled_scores")
    assert np.isneginf(scaled[0, 0, 0, 1]) and np.isneginf(scaled[1, 1, 4, 3])


def test_the_json_body_kserve_builds_gets_an_answer_kserves_model_accepts(server):
    """The request body KServe's client builds for JSON tensors, posted as is: the answer is an
    InferenceResponse by KServe's own data model, outputs in the order requested."""
    inputs, parameters, request = masked_request()
    for given in inputs:
        given.set_data_from_numpy(given.as_numpy(), binary_data=False)
    outputs = [requested("weights"), requested("scaled_scores")]
    body, json_length = (
        kserve().InferRequest("attention", inputs, parameters=parameters, request_outputs=outputs).to_rest()
    )
    assert json_length is None and isinstance(body, dict) and body["model_name"] == "attention"
    response = server.client.post("/v2/models/attention/infer", json=body)
    assert response.status_code == 200, response.text
    answer = kserve_models().InferenceResponse.model_validate(response.json())
    assert answer.id == body["id"] and [o.name for o in answer.outputs] == ["weights", "scaled_scores"]
    expected = as_float32(attend(server, request)["scaled_scores"]).reshape(-1)
    got = np.array(answer.outputs[1].data, dtype=np.float32)  # null (masked) as NaN
    np.testing.assert_array_equal(got, np.where(np.isneginf(expected), np.nan, expected))


# ---------------------------------------------------------------- a text model


@pytest.mark.parametrize("binary", [True, False])
def test_minilm_layers_and_tokens_equal_attend(server, binary):
    """Two texts through MiniLM (the default model), the texts binary or JSON, outputs binary and JSON mixed:
    layers as layers.{i}.weights and tokens as BYTES, equal to /attend's answer for the same texts."""
    outputs = [
        requested("layers.1.weights", {"binary_data": binary}),
        requested("layers.4.weights", {"binary_data": not binary}),
        requested("tokens", {"binary_data": binary}),
    ]
    response, headers = infer(server, BUNDLED_MODEL, [texts_input(TEXTS, binary)], outputs=outputs)
    assert_binary(headers, True)
    assert [o.name for o in response.outputs] == [o.name for o in outputs]
    reference = attend(server, {"text": TEXTS, "layer": [1, 4], "include": ["weights"]})
    for index, layer in enumerate((1, 4)):
        expected = np.array(reference["layers"][index]["weights"], dtype=np.float32)
        np.testing.assert_array_equal(output(response, f"layers.{layer}.weights"), expected)
    tokens = output(response, "tokens")
    seq = max(reference["meta"]["lengths"])
    assert tokens.shape == (2, seq)
    assert tokens.tolist() == [row + [""] * (seq - len(row)) for row in reference["tokens"]]


def test_float16_heads_and_queries_through_kserve(server):
    """wire_dtype float16: FP16 binary outputs, each value float32's nearest float16, cut by heads and queries
    as /attend cuts them."""
    parameters = {"wire_dtype": "float16", "heads": [1, 5], "queries": [0, 2], "binary_data_output": True}
    response, _ = infer(
        server,
        BUNDLED_MODEL,
        [texts_input(TEXTS)],
        parameters=parameters,
        outputs=[requested("layers.2.weights")],
    )
    (described,) = response.outputs
    assert described.datatype == "FP16"
    reference = attend(
        server, {"text": TEXTS, "layer": 2, "include": ["weights"], "heads": [1, 5], "queries": [0, 2]}
    )
    expected = np.array(reference["layers"][0]["weights"], dtype=np.float32).astype(np.float16)
    got = output(response, "layers.2.weights")
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got, expected)


# ---------------------------------------------------------------- requests that do not fit


def wrong_binary_shape() -> InferInput:
    """12 floats of binary data declared as shape [4, 4] (KServe's client checks only numpy's own shape)."""
    given = tensor("embeddings", CAT.astype(np.float32), "FP32")
    given.shape = [4, 4]
    return given


@pytest.mark.parametrize(
    ("model", "given", "status", "expected"),
    [
        (
            "attention",
            lambda: tensor("embeddings", CAT.astype(np.int64), "INT64"),
            400,
            "input 'embeddings': found datatype 'INT64'; expected FP32 or FP64",
        ),
        (
            "attention",
            lambda: tensor("embeddings", CAT.astype(np.float16), "FP16"),
            400,
            "found datatype 'FP16'; expected FP32 or FP64",
        ),
        (
            "attention",
            lambda: kserve().InferInput("embeddings", [4, 4], "FP32", data=[1.0] * 12),
            400,
            "input 'embeddings': found 12 elements in data; expected 16 for shape [4, 4]",
        ),
        ("attention", wrong_binary_shape, 400, "expected 16 elements x 4 bytes = 64 for shape [4, 4]"),
        ("bert", lambda: tensor("embeddings", CAT, "FP64"), 404, "found model 'bert'; expected one of"),
    ],
)
def test_request_that_does_not_fit_raises_with_the_services_message(server, model, given, status, expected):
    with pytest.raises(httpx.HTTPStatusError) as raised:
        infer(server, model, [given()])
    response = raised.value.response
    assert response.status_code == status
    body = response.json()
    assert set(body) == {"error"} and expected in body["error"]
    assert body["error"] in str(raised.value)  # the client's message carries the service's
