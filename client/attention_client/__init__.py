"""Typed Python client of the attention internals service: `Client` (blocking) and `AsyncClient` (asyncio).

from attention_client import Client

with Client("http://127.0.0.1:8000") as client:
    result = client.attend(text="The cat sat", layer=0, include=["weights"])
    result.layers[0].weights  # numpy float64 [batch, head, query_pos, key_pos]
"""

from attention_client.client import API_KEY_ENV, API_KEY_HEADER, DEFAULT_URL, AsyncClient, Client
from attention_client.errors import (
    APIError,
    AttentionError,
    InvalidRequest,
    LimitExceeded,
    ResponseError,
    ServiceTimeout,
    ServiceUnavailable,
    Unauthorized,
)
from attention_client.result import Attention, FloatArray, IntArray, Layers, NotReturned, Predictions, Tensors
from attention_client.wire import (
    ALL_TENSOR_NAMES,
    FLOW_TENSOR_NAMES,
    ROTARY_TENSOR_NAMES,
    SUMMARY_NAMES,
    TENSOR_NAMES,
    Ablate,
    Generate,
    Intervention,
    Knockout,
    Meta,
    ModelInfo,
    ModelList,
    Patch,
    Predict,
    TensorName,
    Weights,
)

__all__ = [
    "ALL_TENSOR_NAMES",
    "API_KEY_ENV",
    "API_KEY_HEADER",
    "DEFAULT_URL",
    "FLOW_TENSOR_NAMES",
    "ROTARY_TENSOR_NAMES",
    "SUMMARY_NAMES",
    "TENSOR_NAMES",
    "APIError",
    "Ablate",
    "AsyncClient",
    "Attention",
    "AttentionError",
    "Client",
    "FloatArray",
    "Generate",
    "IntArray",
    "Intervention",
    "InvalidRequest",
    "Knockout",
    "Layers",
    "LimitExceeded",
    "Meta",
    "ModelInfo",
    "ModelList",
    "NotReturned",
    "Patch",
    "Predict",
    "Predictions",
    "ResponseError",
    "ServiceTimeout",
    "ServiceUnavailable",
    "TensorName",
    "Tensors",
    "Unauthorized",
    "Weights",
]
