"""An Open Inference Protocol infer request as the /attend request it stands for: input tensors become the
request's tensor fields, `parameters` its other fields, requested `outputs` its `include` (and, for a text
model, its `layer`)."""

from __future__ import annotations

from typing import Any, NamedTuple

from schemas.axes import ALL_TENSOR_NAMES
from schemas.oip import (
    BINARY_DATA,
    BINARY_DATA_OUTPUT,
    EMBEDDING_INPUTS,
    EXPLICIT_MODEL,
    MASK_INPUT,
    TEXT_INPUT,
    TOKENS,
    WEIGHT_INPUTS,
    InferRequestHeader,
    is_pretrained,
    model_inputs,
    parse_output_name,
)
from schemas.request import AttendRequest, WeightSpec
from service.compute.oip.inputs import Decoded
from service.errors import InferRequestError

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


def _flag(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise InferRequestError(f"found {where} {value!r}; expected true or false")
    return value


def _expected_outputs(model: str, pretrained: bool) -> str:
    forms = f"layers.{{i}}.{{name}} or {TOKENS}" if pretrained else "{name}"
    if not pretrained and model != EXPLICIT_MODEL:
        forms += f" or {TOKENS}"
    return f"{forms}, with name one of {', '.join(ALL_TENSOR_NAMES)}"


def _selection(
    header: InferRequestHeader, model: str, pretrained: bool, parameters: dict[str, Any], binary_default: bool
) -> tuple[list[Output] | None, dict[str, Any]]:
    """The requested outputs, and the request fields they set: `include`, and `layer` for a text model
    (parameters that say the same are welcome; only a contradiction is refused)."""
    if not header.outputs:
        return None, {}
    outputs: list[Output] = []
    tensors: set[str] = set()
    layers: set[int] = set()
    for output in header.outputs:
        try:
            layer, tensor = parse_output_name(output.name)
        except ValueError:
            layer, tensor = -1, None
        fits = (tensor is None and layer is None and model != EXPLICIT_MODEL) or (
            tensor is not None and (layer is not None) == pretrained
        )
        if not fits:
            raise InferRequestError(
                f"output {output.name!r} is not an output of model {model!r}; expected "
                + _expected_outputs(model, pretrained)
            )
        if any(o.name == output.name for o in outputs):
            raise InferRequestError(f"output {output.name!r} is requested twice")
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
    _agree("include", parameters, set(tensors), "tensors")
    if pretrained and layers:
        _agree("layer", parameters, set(layers), "layers")
    return outputs, fields


def _agree(name: str, parameters: dict[str, Any], named: set[Any], what: str) -> None:
    """parameters.`name` beside the outputs: welcome when it names the same `what` as they do."""
    if name not in parameters:
        return
    given = parameters[name]
    as_set = {given} if isinstance(given, int | str) else set(given) if isinstance(given, list) else None
    if as_set != named:
        raise InferRequestError(
            f"found parameters.{name} {given!r} while the requested outputs name the {what} "
            f"{sorted(named)}; expected the same {what} in both, or only the outputs"
        )


def translate(header: InferRequestHeader, model: str, decoded: dict[str, Decoded]) -> Translated:
    """The /attend request's fields for an infer request to `model` (the decoded inputs by name)."""
    pretrained = is_pretrained(model)
    allowed = model_inputs(model)
    fields: dict[str, Any] = {}
    weights: dict[str, Any] = {}
    for name, value in decoded.items():
        if name not in allowed:
            raise InferRequestError(
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
            raise InferRequestError(
                f"found parameters.{key}; expected request parameters among {', '.join(known)}, or "
                f"{BINARY_DATA_OUTPUT}"
            )
    if model != EXPLICIT_MODEL:
        fields["model"] = model
    if weights:
        fields["weights"] = weights
    binary_default = _flag(parameters.get(BINARY_DATA_OUTPUT, False), f"parameters.{BINARY_DATA_OUTPUT}")
    outputs, selected = _selection(header, model, pretrained, parameters, binary_default)
    return Translated(fields | selected, outputs, binary_default)
