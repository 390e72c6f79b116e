"""The Open Inference Protocol v2 (KServe / Triton REST) vocabulary of this service: model names, input and
output tensor names and their datatypes, and the request's JSON header. Shared by the server process (model
metadata, routing) and the compute processes (decoding inputs, encoding outputs)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from schemas.axes import ALL_TENSOR_NAMES, FLOW_TENSOR_NAMES, TENSOR_AXES, TENSOR_NAMES, TensorName
from schemas.request import TOY_MODEL

OIP_PREFIX = "/v2"  # where the protocol's routes are
# the model of the explicit path (embeddings, or Q/K/V, with weights); the toy model and the pretrained models
# go by their GET /models names
EXPLICIT_MODEL = "attention"
MODEL_VERSION = "1"
BINARY_EXTENSION = "binary_tensor_data"
HEADER_LENGTH = "Inference-Header-Content-Length"
TOKENS = "tokens"

# datatype -> numpy dtype of its binary form (little-endian, as the protocol sends it)
NUMERIC_DATATYPES = {"FP32": "<f4", "FP64": "<f8", "INT64": "<i8", "BOOL": "|u1"}
BYTES = "BYTES"
FLOAT_DATATYPES = ("FP32", "FP64")
MASK_DATATYPES = ("INT64", "BOOL", "FP32", "FP64")

EMBEDDING_INPUTS = ("embeddings", "context", "query", "key", "value")
WEIGHT_INPUTS = ("w_q", "w_k", "w_v", "w_o", "b_q", "b_k", "b_v", "b_o")
MASK_INPUT = "attention_mask"
TEXT_INPUT = "text"

# the shape each input has in model metadata (-1: any length); embeddings-like inputs also take rank 2
INPUT_SHAPES: dict[str, list[int]] = {
    **dict.fromkeys(EMBEDDING_INPUTS, [-1, -1, -1]),
    **dict.fromkeys(WEIGHT_INPUTS[:4], [-1, -1]),
    **dict.fromkeys(WEIGHT_INPUTS[4:], [-1]),
    MASK_INPUT: [-1, -1],
    TEXT_INPUT: [-1],
}

# OIP's own request parameters, which are not fields of the /attend request
BINARY_DATA_OUTPUT = "binary_data_output"
BINARY_DATA = "binary_data"
BINARY_DATA_SIZE = "binary_data_size"


def input_datatypes(name: str) -> tuple[str, ...]:
    """The datatypes input `name` takes: the one place that says so, for decoding and for the fuzz tests."""
    if name == TEXT_INPUT:
        return (BYTES,)
    return MASK_DATATYPES if name == MASK_INPUT else FLOAT_DATATYPES


def is_pretrained(model: str) -> bool:
    """Whether `model` is a pretrained model (text through its layers; outputs `layers.{i}.{name}`), rather
    than the explicit model or the toy model (outputs `{name}`)."""
    return model not in (EXPLICIT_MODEL, TOY_MODEL)


def model_inputs(model: str) -> tuple[str, ...]:
    """The inputs `model` takes: the one place that says so, for its metadata and for decoding its
    requests."""
    if model == EXPLICIT_MODEL:
        return (*EMBEDDING_INPUTS, *WEIGHT_INPUTS, MASK_INPUT)
    return (TEXT_INPUT,) if is_pretrained(model) else (TEXT_INPUT, *WEIGHT_INPUTS)


def layer_output(layer: int, name: str) -> str:
    return f"layers.{layer}.{name}"


def tensor_metadata(name: str, datatype: str, rank: int) -> TensorMetadata:
    return TensorMetadata(name=name, datatype=datatype, shape=[-1] * rank)


def model_metadata(name: str, layers: int | None) -> ModelMetadata:
    """GET /v2/models/{name}: `layers` is the pretrained model's layer count (None for the explicit and the
    toy model, whose outputs are the tensors themselves, or a pretrained model whose config is unreadable)."""
    inputs = [
        TensorMetadata(
            name=input_name,
            datatype=BYTES if input_name == TEXT_INPUT else "FP32",
            shape=INPUT_SHAPES[input_name],
        )
        for input_name in model_inputs(name)
    ]
    if layers is None:
        outputs = [tensor_metadata(t, "FP32", len(TENSOR_AXES[t])) for t in TENSOR_NAMES]
    else:
        outputs = [
            tensor_metadata(layer_output(i, t), "FP32", len(TENSOR_AXES[t]))
            for i in range(layers)
            for t in TENSOR_NAMES + FLOW_TENSOR_NAMES
        ]
    if name != EXPLICIT_MODEL:
        outputs.append(tensor_metadata(TOKENS, BYTES, 2))
    return ModelMetadata(
        name=name, versions=[MODEL_VERSION], platform="pytorch", inputs=inputs, outputs=outputs
    )


def parse_output_name(name: str) -> tuple[int | None, TensorName | None]:
    """(layer, tensor) of an output name: "weights" -> (None, "weights"), "layers.3.q" -> (3, "q"),
    "tokens" -> (None, None); raises ValueError for any other name."""
    if name == TOKENS:
        return None, None
    parts = name.split(".")
    if len(parts) == 1 and name in ALL_TENSOR_NAMES:
        return None, name
    if len(parts) == 3 and parts[0] == "layers" and parts[1].isascii() and parts[1].isdigit():
        tensor = parts[2]
        if tensor in ALL_TENSOR_NAMES and len(parts[1]) < 10:
            return int(parts[1]), tensor
    raise ValueError(name)


_OPEN = ConfigDict(extra="allow", strict=True)


# What the document states of an input beyond its Python type, so that a client or a contract tester sees the
# names, datatypes and shapes the service takes; the compute stage checks each with its own message (naming
# the input, what was found and what was expected), which a validation error of this model could not say.
INPUT_NAMES = (*EMBEDDING_INPUTS, *WEIGHT_INPUTS, MASK_INPUT, TEXT_INPUT)
DATATYPES = (*NUMERIC_DATATYPES, BYTES)
_ELEMENT = {"anyOf": [{"type": "number"}, {"type": "string"}, {"type": "boolean"}]}


def _data_schema(schema: dict[str, Any]) -> None:
    """data: an array of elements or of nested arrays; absent (not null) when the data is binary."""
    schema.pop("default", None)
    schema.update(type="array", items={"anyOf": [_ELEMENT, {"type": "array", "items": {}}]})


def _integral_number(value: Any) -> Any:
    """JSON Schema's integer is any number with a zero fraction (2.0 is one), as the document states it, while
    a strict int field takes only 2: such a float is taken as its integer; 2.5, "2" and true stay refused."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


AxisSize = Annotated[int, BeforeValidator(_integral_number)]


class InferInput(BaseModel):
    model_config = _OPEN

    name: str = Field(
        min_length=1,
        max_length=64,
        description="`text` for a text model; embeddings (or query, key and value), optional weights and "
        "attention_mask for `attention` (GET /v2/models/{name} lists a model's).",
        json_schema_extra={"enum": list(INPUT_NAMES)},
    )
    shape: list[AxisSize] = Field(
        max_length=8,
        description="The size of each axis (at least 1: a request's shape is exact, and no input is "
        "empty); data holds their product of elements.",
        json_schema_extra={"items": {"type": "integer", "minimum": 1, "maximum": 2**31 - 1}},
    )
    datatype: str = Field(
        max_length=16,
        description="BYTES for text; FP32 or FP64 for the tensors; INT64, BOOL, FP32 or FP64 for the mask.",
        json_schema_extra={"enum": list(DATATYPES)},
    )
    parameters: dict[str, Any] | None = Field(
        None, description=f"`{BINARY_DATA_SIZE}`: its bytes in the binary data after the JSON header."
    )
    data: Any = Field(
        None,
        description="The elements in row-major order, flat or nested as the shape; absent when the data is "
        "binary.",
        json_schema_extra=_data_schema,
    )


class RequestedOutput(BaseModel):
    model_config = _OPEN

    name: str = Field(min_length=1, max_length=64)
    parameters: dict[str, Any] | None = None


class InferRequestHeader(BaseModel):
    """The JSON header of POST /v2/models/{name}/infer (the whole body without binary data)."""

    model_config = _OPEN

    id: str | None = Field(None, max_length=256)
    parameters: dict[str, Any] | None = None
    inputs: list[InferInput] = Field(min_length=1, max_length=64)
    outputs: list[RequestedOutput] | None = Field(None, max_length=1024)


# the answers, as the OpenAPI document declares them


class OipError(BaseModel):
    """Every refusal of the /v2 routes: the protocol's error body."""

    error: str


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class Liveness(BaseModel):
    live: bool


class ServerReadiness(BaseModel):
    ready: bool


class ModelReadiness(BaseModel):
    name: str
    ready: bool


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int] = Field(description="-1 for an axis whose length depends on the request")


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class InferOutput(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str = Field(
        description="A response tensor's name, `layers.{i}.{name}` for a model's layer, or `tokens`"
    )
    datatype: str
    shape: list[int]
    parameters: dict[str, Any] | None = Field(None, description="`binary_data_size` when the data is binary")
    data: list[Any] | None = Field(None, description="Row-major; absent when the data is binary")


class InferResponseHeader(BaseModel):
    """The answer of POST /v2/models/{name}/infer (its JSON header when binary data follows)."""

    model_name: str
    model_version: str
    id: str
    parameters: dict[str, Any] = Field(description="`meta`: the response's meta as a JSON string")
    outputs: list[InferOutput]
