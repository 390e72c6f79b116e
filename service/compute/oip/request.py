"""An Open Inference Protocol infer request as the /attend request it stands for: input tensors become the
request's tensor fields, `parameters` its other fields, requested `outputs` its `include` (and, for a text
model, its `layer`)."""

from __future__ import annotations

from typing import Any, NamedTuple

from schemas.axes import ALL_TENSOR_NAMES
from schemas.oip import (
    ATTENTION_MODEL,
    BINARY_DATA,
    BINARY_DATA_OUTPUT,
    EMBEDDING_INPUTS,
    MASK_INPUT,
    TEXT_INPUT,
    TOKENS,
    WEIGHT_INPUTS,
    InferRequestHeader,
    parse_output_name,
)
from schemas.request import AttendRequest, WeightSpec
from service.compute.oip.inputs import Decoded, OipError

_TENSOR_FIELDS = {*EMBEDDING_INPUTS, MASK_INPUT, TEXT_INPUT, "model", "weights"}
# every other field of the /attend request travels in `parameters` (new fields included, as they are added)
REQUEST_PARAMETERS = frozenset(AttendRequest.model_fields) - _TENSOR_FIELDS
WEIGHT_PARAMETERS = frozenset(WeightSpec.model_fields) - set(WEIGHT_INPUTS)


class Output(NamedTuple):
    name: str
    binary: bool


class Translated(NamedTuple):
    fields: dict[str, Any]  # of the /attend request, validated by the caller (its errors name the fields)
    outputs: list[Output] | None  # the requested outputs in order, or None: all, binary or not as asked
    binary_default: bool


def _inputs_of(model: str, pretrained: bool) -> tuple[str, ...]:
    if model == ATTENTION_MODEL:
        return (*EMBEDDING_INPUTS, *WEIGHT_INPUTS, MASK_INPUT)
    return (TEXT_INPUT,) if pretrained else (TEXT_INPUT, *WEIGHT_INPUTS)


def _flag(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise OipError(f"found {where} {value!r}; expected true or false")
    return value


def _expected_outputs(model: str, pretrained: bool) -> str:
    forms = f"layers.{{i}}.{{name}} or {TOKENS}" if pretrained else "{name}"
    if not pretrained and model != ATTENTION_MODEL:
        forms += f" or {TOKENS}"
    return f"{forms}, with name one of {', '.join(ALL_TENSOR_NAMES)}"


def _selection(
    header: InferRequestHeader, model: str, pretrained: bool, parameters: dict[str, Any], binary_default: bool
) -> tuple[list[Output] | None, dict[str, Any]]:
    """The requested outputs, and the request fields they set: `include`, and `layer` for a text model."""
    if not header.outputs:
        return None, {}
    for taken in ("include", "layer") if pretrained else ("include",):
        if taken in parameters:
            raise OipError(
                f"found both outputs and parameters.{taken}; the requested outputs say which tensors "
                "to compute: give one of them"
            )
    outputs: list[Output] = []
    tensors: set[str] = set()
    layers: set[int] = set()
    for output in header.outputs:
        try:
            layer, tensor = parse_output_name(output.name)
        except ValueError:
            layer, tensor = -1, None
        fits = (tensor is None and layer is None and model != ATTENTION_MODEL) or (
            tensor is not None and (layer is not None) == pretrained
        )
        if not fits:
            raise OipError(
                f"output {output.name!r} is not an output of model {model!r}; expected "
                + _expected_outputs(model, pretrained)
            )
        if any(o.name == output.name for o in outputs):
            raise OipError(f"output {output.name!r} is requested twice")
        where = f"parameters.{BINARY_DATA} of output {output.name!r}"
        binary = _flag((output.parameters or {}).get(BINARY_DATA, binary_default), where)
        outputs.append(Output(output.name, binary))
        if tensor is not None:
            tensors.add(tensor)
        if layer is not None:
            layers.add(layer)
    fields: dict[str, Any] = {"include": [t for t in ALL_TENSOR_NAMES if t in tensors]}
    if pretrained:
        fields["layer"] = sorted(layers) or [0]  # only tokens asked for: the cheapest layer, nothing returned
    return outputs, fields


def translate(
    header: InferRequestHeader, model: str, pretrained: bool, decoded: dict[str, Decoded]
) -> Translated:
    """The /attend request's fields for an infer request to `model` (the decoded inputs by name)."""
    allowed = _inputs_of(model, pretrained)
    fields: dict[str, Any] = {}
    weights: dict[str, Any] = {}
    for name, value in decoded.items():
        if name not in allowed:
            raise OipError(
                f"input {name!r} is not an input of model {model!r}; expected {', '.join(allowed)}"
            )
        (weights if name in WEIGHT_INPUTS else fields)[name] = value
    parameters = dict(header.parameters or {})
    for key, value in parameters.items():
        if key == BINARY_DATA_OUTPUT:
            continue
        if key in WEIGHT_PARAMETERS and not pretrained:
            weights[key] = value
        elif key in REQUEST_PARAMETERS:
            fields[key] = value
        else:
            known = sorted(REQUEST_PARAMETERS | (set() if pretrained else WEIGHT_PARAMETERS))
            raise OipError(
                f"found parameters.{key}; expected request parameters among {', '.join(known)}, or "
                f"{BINARY_DATA_OUTPUT}"
            )
    if model != ATTENTION_MODEL:
        fields["model"] = model
    if weights:
        fields["weights"] = weights
    binary_default = _flag(parameters.get(BINARY_DATA_OUTPUT, False), f"parameters.{BINARY_DATA_OUTPUT}")
    outputs, selected = _selection(header, model, pretrained, parameters, binary_default)
    return Translated(fields | selected, outputs, binary_default)
