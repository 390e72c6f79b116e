"""The Open Inference Protocol door's decoding in this process (service/compute/oip/): input tensors, JSON or
binary, into numpy arrays and texts (inputs.py); an infer request's inputs, parameters and outputs into the
/attend request it stands for (request.py); a whole OIP_INFER envelope into that request, with errors named as
the infer request names them (__init__.py decode). The expected values are built here from the protocol's
definition (little-endian arrays, 4-byte length-prefixed BYTES), never from the service's own answers."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import orjson
import pytest

from schemas.oip import (
    BINARY_DATA_OUTPUT,
    EXPLICIT_MODEL,
    InferInput,
    InferRequestHeader,
    model_inputs,
    model_metadata,
)
from schemas.request import TOY_MODEL
from service.compute.oip import decode
from service.compute.oip.inputs import decode_inputs
from service.compute.oip.request import Output, translate
from service.errors import InferRequestError, LimitExceeded
from service.protocol import OIP_PRELUDE
from service.settings import BUNDLED_MODEL, Settings

SETTINGS = Settings()
NOTHING = memoryview(b"")


def binary_input(name: str, datatype: str, shape: list[int], data: bytes) -> InferInput:
    return InferInput(name=name, datatype=datatype, shape=shape, parameters={"binary_data_size": len(data)})


def json_input(name: str, datatype: str, shape: list[int], data: Any) -> InferInput:
    return InferInput(name=name, datatype=datatype, shape=shape, data=data)


def length_prefixed(*texts: str) -> bytes:
    return b"".join(struct.pack("<I", len(text.encode())) + text.encode() for text in texts)


def envelope(model: str, header: dict[str, Any], binary: bytes = b"") -> bytes:
    """An OIP_INFER request as the server sends it (service/protocol.py): OIP_PRELUDE, the model, the body."""
    head = orjson.dumps(header)
    name = model.encode()
    return OIP_PRELUDE.pack(len(head), len(name)) + name + head + binary


def test_a_binary_fp32_input_is_its_little_endian_floats_widened_to_float64():
    values = np.array([[[0.1, -2.5], [3.0e38, 1e-7]]], dtype="<f4")
    decoded = decode_inputs(
        [binary_input("embeddings", "FP32", [1, 2, 2], values.tobytes())],
        memoryview(values.tobytes()),
        SETTINGS,
    )
    array = decoded["embeddings"]
    assert isinstance(array, np.ndarray) and array.dtype == np.float64 and array.shape == (1, 2, 2)
    np.testing.assert_array_equal(array, values.astype(np.float64))  # exactly the float32 values sent


def test_json_data_flat_or_nested_as_the_shape_is_the_same_tensor():
    nested = [[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]]
    flat = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    from_nested = decode_inputs([json_input("query", "FP64", [1, 2, 3], nested)], NOTHING, SETTINGS)["query"]
    from_flat = decode_inputs([json_input("query", "FP64", [1, 2, 3], flat)], NOTHING, SETTINGS)["query"]
    expected = np.arange(1.0, 7.0).reshape(1, 2, 3)
    np.testing.assert_array_equal(from_nested, expected)
    np.testing.assert_array_equal(from_flat, expected)


def test_fp32_json_data_is_rounded_to_float32_as_declared():
    decoded = decode_inputs([json_input("embeddings", "FP32", [1, 1, 1], [0.1])], NOTHING, SETTINGS)
    assert np.asarray(decoded["embeddings"]).reshape(-1)[0] == float(np.float32(0.1)) != 0.1


def test_binary_inputs_follow_each_other_in_the_order_of_the_header():
    mask = np.array([[1, 1, 0]], dtype="<i8")
    embeddings = np.arange(6, dtype="<f8").reshape(1, 3, 2)
    data = embeddings.tobytes() + mask.tobytes()
    decoded = decode_inputs(
        [
            binary_input("embeddings", "FP64", [1, 3, 2], embeddings.tobytes()),
            binary_input("attention_mask", "INT64", [1, 3], mask.tobytes()),
        ],
        memoryview(data),
        SETTINGS,
    )
    np.testing.assert_array_equal(decoded["embeddings"], embeddings)
    np.testing.assert_array_equal(decoded["attention_mask"], mask.astype(np.float64))


def test_binary_bytes_are_length_prefixed_utf8_texts():
    data = length_prefixed("The cat", "", "naïve")
    decoded = decode_inputs([binary_input("text", "BYTES", [3], data)], memoryview(data), SETTINGS)
    assert decoded["text"] == ["The cat", "", "naïve"]


@pytest.mark.parametrize(
    ("tensor", "binary", "message"),
    [
        (json_input("embeddings", "FP32", [1, 1, 1], [1e39]), b"", "within FP32 range"),
        (
            json_input("embeddings", "FP64", [1, 2, 2], [1.0, 2.0, 3.0]),
            b"",
            "found 3 elements in data; expected 4",
        ),
        (
            json_input("embeddings", "INT64", [1, 1, 1], [1]),
            b"",
            "found datatype 'INT64'; expected FP32 or FP64",
        ),
        (json_input("text", "BYTES", [1, 1], ["a"]), b"", "expected [n], one element per text"),
        (json_input("query", "FP64", [1, -1, 2], []), b"", "expected sizes of at least 0"),
        (json_input("embeddings", "FP64", [1, 1, 1], ["1.0"]), b"", "data element 0 is '1.0'"),
        (
            binary_input("embeddings", "FP32", [1, 1, 2], b"\0" * 4),
            b"\0" * 4,
            "expected 2 elements x 4 bytes",
        ),
        (
            binary_input("attention_mask", "BOOL", [1, 3], b"\1\0\2"),
            b"\1\0\2",
            "byte 2 of its BOOL data is 2",
        ),
        (
            binary_input("text", "BYTES", [1], b"\5\0\0\0ab"),
            b"\5\0\0\0ab",
            "declares 5 bytes but only 2 remain",
        ),
        (binary_input("text", "BYTES", [1], b"\2\0\0\0\xff\xfe"), b"\2\0\0\0\xff\xfe", "not valid UTF-8"),
    ],
)
def test_an_input_that_does_not_fit_is_refused_naming_it(tensor, binary, message):
    with pytest.raises(InferRequestError, match="input '(embeddings|text|query|attention_mask)'") as refused:
        decode_inputs([tensor], memoryview(binary), SETTINGS)
    assert message in str(refused.value)


def test_binary_data_must_add_up_to_the_declared_sizes():
    with pytest.raises(InferRequestError, match="found 3 byte\\(s\\) after the JSON header"):
        decode_inputs([json_input("embeddings", "FP64", [1, 1, 1], [1.0])], memoryview(b"abc"), SETTINGS)
    with pytest.raises(InferRequestError, match="only 4 byte\\(s\\) of binary data remain"):
        decode_inputs(
            [binary_input("embeddings", "FP64", [1, 1, 1], b"\0" * 8)], memoryview(b"\0" * 4), SETTINGS
        )


def test_an_input_given_twice_is_refused():
    tensor = json_input("embeddings", "FP64", [1, 1, 1], [1.0])
    with pytest.raises(InferRequestError, match="input 'embeddings' is given twice"):
        decode_inputs([tensor, tensor], NOTHING, SETTINGS)


def test_a_bytes_input_over_the_batch_limit_is_refused_before_its_texts_are_read():
    settings = Settings(max_batch=2)
    data = length_prefixed("a", "b", "c")
    with pytest.raises(LimitExceeded, match="ATTENTION_MAX_BATCH"):
        decode_inputs([binary_input("text", "BYTES", [3], data)], memoryview(data), settings)


@pytest.mark.parametrize("model", [EXPLICIT_MODEL, TOY_MODEL, BUNDLED_MODEL])
def test_decoding_accepts_exactly_the_inputs_the_model_metadata_declares(model):
    """One place says which inputs a model takes: the metadata's inputs are those translate accepts."""
    declared = [tensor.name for tensor in model_metadata(model, None).inputs]
    assert declared == list(model_inputs(model))
    header = InferRequestHeader(inputs=[json_input(declared[0], "FP64", [1], [1.0])])
    for name in declared:
        translate(header, model, {name: np.zeros(1)})  # accepted
    for name in {"embeddings", "text", "w_q", "attention_mask"} - set(declared):
        with pytest.raises(InferRequestError, match=f"input '{name}' is not an input of model '{model}'"):
            translate(header, model, {name: np.zeros(1)})


def test_parameters_become_request_fields_and_weight_settings():
    header = InferRequestHeader(
        inputs=[json_input("embeddings", "FP64", [1], [1.0])],
        parameters={"num_heads": 2, "causal": True, "seed": 7, "init": "normal"},
    )
    embeddings = np.ones((1, 2, 4))
    translated = translate(header, EXPLICIT_MODEL, {"embeddings": embeddings})
    assert translated.fields["embeddings"] is embeddings
    assert {key: translated.fields[key] for key in ("num_heads", "causal")} == {
        "num_heads": 2,
        "causal": True,
    }
    assert translated.fields["weights"] == {"seed": 7, "init": "normal"}
    assert "model" not in translated.fields  # the explicit model is /attend without a model
    assert translated.outputs is None and translated.binary_default is False


def test_an_unknown_parameter_is_refused_with_the_known_ones():
    header = InferRequestHeader(inputs=[json_input("text", "BYTES", [1], ["a"])], parameters={"bogus": 1})
    with pytest.raises(
        InferRequestError, match="found parameters.bogus; expected request parameters among .*causal"
    ):
        translate(header, BUNDLED_MODEL, {"text": ["a"]})
    # a pretrained model has its own weights: weight settings are not its parameters
    header = InferRequestHeader(inputs=[json_input("text", "BYTES", [1], ["a"])], parameters={"seed": 1})
    with pytest.raises(InferRequestError, match="found parameters.seed"):
        translate(header, BUNDLED_MODEL, {"text": ["a"]})


def test_requested_outputs_of_a_pretrained_model_set_its_tensors_and_layers():
    header = InferRequestHeader.model_validate(
        {
            "inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["a"]}],
            "outputs": [
                {"name": "layers.3.weights"},
                {"name": "tokens", "parameters": {"binary_data": True}},
                {"name": "layers.1.q"},
            ],
            "parameters": {BINARY_DATA_OUTPUT: False},
        }
    )
    translated = translate(header, BUNDLED_MODEL, {"text": ["a"]})
    assert translated.fields["model"] == BUNDLED_MODEL
    assert translated.fields["include"] == ["q", "weights"]  # in the service's tensor order
    assert translated.fields["layer"] == [1, 3]
    assert translated.outputs == [
        Output("layers.3.weights", False),
        Output("tokens", True),
        Output("layers.1.q", False),
    ]


@pytest.mark.parametrize(
    ("model", "output", "message"),
    [
        (EXPLICIT_MODEL, "layers.0.q", "not an output of model 'attention'"),
        (EXPLICIT_MODEL, "tokens", "not an output of model 'attention'"),
        (BUNDLED_MODEL, "weights", "expected layers.{i}.{name} or tokens"),
        (TOY_MODEL, "layers.0.q", "expected {name} or tokens"),
    ],
)
def test_an_output_the_model_does_not_have_is_refused(model, output, message):
    inputs = [json_input("text", "BYTES", [1], ["a"])]
    header = InferRequestHeader.model_validate(
        {"inputs": [i.model_dump() for i in inputs], "outputs": [{"name": output}]}
    )
    with pytest.raises(InferRequestError) as refused:
        translate(header, model, {})
    assert message in str(refused.value)


def test_outputs_and_parameters_include_cannot_contradict_each_other():
    header = InferRequestHeader.model_validate(
        {
            "inputs": [{"name": "embeddings", "datatype": "FP64", "shape": [1], "data": [1.0]}],
            "outputs": [{"name": "weights"}],
            "parameters": {"include": ["q"]},
        }
    )
    with pytest.raises(
        InferRequestError, match=r"found parameters.include \['q'\] while the requested outputs"
    ):
        translate(header, EXPLICIT_MODEL, {})


@pytest.mark.parametrize("layer", [2, [2]])
def test_outputs_with_a_matching_parameters_layer_and_include_are_welcome(layer: int | list[int]):
    header = InferRequestHeader.model_validate(
        {
            "inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["a"]}],
            "outputs": [{"name": "layers.2.weights"}],
            "parameters": {"layer": layer, "include": ["weights"]},
        }
    )
    translated = translate(header, BUNDLED_MODEL, {"text": ["a"]})
    assert translated.fields["layer"] in (2, [2]) and translated.fields["include"] == ["weights"]
    contradicting = header.model_copy(update={"parameters": {"layer": 3}})
    with pytest.raises(
        InferRequestError, match=r"found parameters.layer 3 while the requested outputs name the layers \[2\]"
    ):
        translate(contradicting, BUNDLED_MODEL, {"text": ["a"]})


def test_an_envelope_decodes_into_the_attend_request_it_stands_for():
    embeddings = np.array([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]], dtype="<f4")
    header = {
        "id": "r1",
        "inputs": [
            {
                "name": "embeddings",
                "datatype": "FP32",
                "shape": [1, 3, 2],
                "parameters": {"binary_data_size": 24},
            }
        ],
        "parameters": {"num_heads": 1, "causal": True},
        "outputs": [{"name": "weights"}],
    }
    infer = decode(envelope(EXPLICIT_MODEL, header, embeddings.tobytes()), SETTINGS)
    assert (infer.model, infer.request_id, infer.inputs) == (EXPLICIT_MODEL, "r1", frozenset({"embeddings"}))
    request = infer.request
    assert request.causal is True and request.num_heads == 1 and request.model is None
    assert tuple(request.returned) == ("weights",)
    np.testing.assert_array_equal(np.asarray(request.embeddings), embeddings.astype(np.float64))


@pytest.mark.parametrize(
    ("header", "message"),
    [
        # the /attend request's own rules, named as the infer request names the field
        (
            {"inputs": [{"name": "embeddings", "datatype": "FP64", "shape": [1, 1, 2], "data": [1.0, 2.0]}],
             "parameters": {"num_heads": 0}},
            "parameters.num_heads: ",
        ),
        (
            {"inputs": [{"name": "embeddings", "datatype": "FP64", "shape": [2], "data": [1.0, 2.0]}]},
            "input 'embeddings'",
        ),
        ({"inputs": []}, "inputs: "),
    ],
)  # fmt: skip
def test_an_envelope_that_does_not_fit_is_refused_naming_the_field(header, message):
    with pytest.raises(InferRequestError) as refused:
        decode(envelope(EXPLICIT_MODEL, header), SETTINGS)
    assert message in str(refused.value)


def test_an_envelope_whose_header_is_not_json_is_refused():
    prelude = OIP_PRELUDE.pack(5, len(EXPLICIT_MODEL)) + EXPLICIT_MODEL.encode()
    with pytest.raises(InferRequestError, match="the JSON header is not valid JSON"):
        decode(prelude + b"{oops", SETTINGS)
    with pytest.raises(InferRequestError, match="exceeds the body's 5 bytes"):
        decode(OIP_PRELUDE.pack(6, len(EXPLICIT_MODEL)) + EXPLICIT_MODEL.encode() + b"{oops", SETTINGS)
