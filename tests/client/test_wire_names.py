"""The client names what the service names (docs/api.md; names are fixed): `attend`'s arguments are the
request's fields, `Weights` and `Meta` the service's own models' fields, the tensor names and the API key
header the service's. When the service grows a field, these say which of the client's names to add."""

from __future__ import annotations

import inspect
import typing

from attention_client import (
    ALL_TENSOR_NAMES,
    API_KEY_HEADER,
    FLOW_TENSOR_NAMES,
    ROTARY_TENSOR_NAMES,
    SUMMARY_NAMES,
    TENSOR_NAMES,
    AsyncClient,
    Client,
    Meta,
    ModelInfo,
    ModelList,
    TensorName,
    Weights,
)
from attention_client.wire import INTEGER_TENSORS
from schemas import axes
from schemas.request import AttendRequest, WeightSpec
from schemas.response import LayerTensors
from schemas.response import Meta as ServiceMeta
from schemas.service_info import ModelInfo as ServiceModelInfo
from schemas.service_info import ModelList as ServiceModelList
from service.server.security import api_key_header


def arguments(method: typing.Callable[..., object]) -> dict[str, inspect.Parameter]:
    parameters = dict(inspect.signature(method).parameters)
    parameters.pop("self")
    return parameters


def test_attend_takes_every_request_field_by_its_wire_name():
    names = set(arguments(Client.attend))
    fields = set(AttendRequest.model_fields)
    assert names == fields, (
        f"add to Client.attend and AsyncClient.attend: {fields - names}; not fields: {names - fields}"
    )
    assert all(
        p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is None
        for p in arguments(Client.attend).values()
    )


def test_both_clients_take_the_same_arguments():
    assert arguments(AsyncClient.attend) == arguments(Client.attend)
    assert (
        inspect.signature(AsyncClient.__init__).parameters.keys()
        == inspect.signature(Client.__init__).parameters.keys()
    )


def test_weights_and_meta_keys_are_the_services_fields():
    assert set(Weights.__optional_keys__) == set(WeightSpec.model_fields)
    required = {name for name, field in ServiceMeta.model_fields.items() if field.is_required()}
    assert set(Meta.__required_keys__) == required
    assert set(Meta.__required_keys__ | Meta.__optional_keys__) == set(ServiceMeta.model_fields)


def test_model_list_keys_are_the_services_fields():
    # GET /models sends every field of its entries (null where a model has none): all are required keys
    assert set(ModelInfo.__required_keys__) == set(ServiceModelInfo.model_fields)
    assert not ModelInfo.__optional_keys__
    assert set(ModelList.__required_keys__) == set(ServiceModelList.model_fields)


def test_tensor_names_and_the_key_header():
    assert TENSOR_NAMES == axes.TENSOR_NAMES
    assert ROTARY_TENSOR_NAMES == axes.ROTARY_TENSOR_NAMES
    assert FLOW_TENSOR_NAMES == axes.FLOW_TENSOR_NAMES
    assert ALL_TENSOR_NAMES == axes.ALL_TENSOR_NAMES
    assert SUMMARY_NAMES == axes.SUMMARY_NAMES
    assert INTEGER_TENSORS == axes.INTEGER_TENSORS
    assert typing.get_args(TensorName) == typing.get_args(axes.TensorName)
    # every tensor field of a response (a model's layer: the same ones and its index)
    assert set(ALL_TENSOR_NAMES) == set(LayerTensors.model_fields) - {"layer"}
    assert api_key_header.model.name == API_KEY_HEADER
