"""`Client` (blocking) and `AsyncClient` (asyncio) of the attention internals service, on httpx.

Both send the same requests and read the same answers (request.py, decode.py, errors.py, retry.py); only the
waiting differs. `attend`'s arguments are the wire fields of `POST /attend` (docs/api.md), keyword-only."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal, cast

import httpx
import numpy.typing as npt

from attention_client.decode import JSON, decode
from attention_client.errors import error_from
from attention_client.request import attend_body
from attention_client.result import Attention
from attention_client.retry import RetryPolicy, retry_after
from attention_client.wire import (
    Device,
    Dtype,
    Generate,
    Intervention,
    ModelList,
    Predict,
    TensorName,
    Weights,
    WireDtype,
)

DEFAULT_URL = "http://127.0.0.1:8000"
API_KEY_HEADER = "X-API-Key"  # the service's header (ATTENTION_API_KEYS)
API_KEY_ENV = "ATTENTION_API_KEY"  # read when no api_key is given
DEFAULT_TIMEOUT_S = 120.0  # above the service's own time limit (60 s by default), so its 504 arrives first


class _Settings:
    """What both clients share: the headers (with the API key, if any) and the retry policy."""

    def __init__(
        self,
        api_key: str | None,
        headers: Mapping[str, str] | None,
        retries: int,
        max_retry_wait: float,
    ):
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV) or None
        self.headers = {**(headers or {}), **({API_KEY_HEADER: key} if key else {})}
        self.retry = RetryPolicy(retries, max_retry_wait)


def _attend_request(arguments: dict[str, Any]) -> dict[str, Any]:
    """httpx's arguments of a POST /attend with `attend`'s arguments (its locals) as the body."""
    arguments.pop("self")
    return {"content": attend_body(arguments), "headers": {"content-type": JSON, "accept": JSON}}


def _final(response: httpx.Response) -> httpx.Response:
    """The response if it succeeded; its exception otherwise."""
    if response.is_success:
        return response
    raise error_from(response, retry_after(response))


class Client:
    """A blocking client.

    `api_key` goes in the X-API-Key header (default: the environment variable ATTENTION_API_KEY, if set).
    A 503 with Retry-After (the service is saturated) is sent again after the wait the service asks for, at
    most `retries` times and only when that wait is at most `max_retry_wait` seconds; then
    `ServiceUnavailable` is raised. `timeout` is httpx's (seconds, or an `httpx.Timeout`); `transport` an
    httpx transport (e.g. `httpx.HTTPTransport(retries=2)` to retry failed connections). Use it in a `with`
    block, or `close()` it."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        api_key: str | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT_S,
        retries: int = 3,
        max_retry_wait: float = 30.0,
        headers: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ):
        self._settings = _Settings(api_key, headers, retries, max_retry_wait)
        self._http = httpx.Client(
            base_url=base_url, headers=self._settings.headers, timeout=timeout, transport=transport
        )

    def attend(
        self,
        *,
        embeddings: npt.ArrayLike | None = None,
        context: npt.ArrayLike | None = None,
        query: npt.ArrayLike | None = None,
        key: npt.ArrayLike | None = None,
        value: npt.ArrayLike | None = None,
        text: str | Sequence[str] | None = None,
        model: str | None = None,
        layer: int | Sequence[int] | Literal["all"] | None = None,
        truncate: bool | None = None,
        d_model: int | None = None,
        weights: Weights | None = None,
        num_heads: int | None = None,
        d_k: int | None = None,
        d_v: int | None = None,
        scale: float | None = None,
        causal: bool | None = None,
        attention_mask: npt.ArrayLike | None = None,
        include: Sequence[TensorName] | None = None,
        top_k: int | None = None,
        pool: int | None = None,
        device: Device | None = None,
        dtype: Dtype | None = None,
        decimals: int | None = None,
        heads: Sequence[int] | None = None,
        queries: Sequence[int] | None = None,
        wire_dtype: WireDtype | None = None,
        predict: Predict | None = None,
        interventions: Sequence[Intervention] | None = None,
        clean: bool | None = None,
        generate: Generate | None = None,
    ) -> Attention:
        """`POST /attend`. The arguments are the request's fields (docs/api.md, or /docs); one input form:
        `embeddings` (with `weights`, optionally `context`), `query` + `key` + `value`, or `text` (with
        `model`, `layer`). Arrays are anything numpy reads; an argument left None is not sent, so the
        service's default applies.

        Returns the tensors as float64 arrays with their axes (`result.axes`), masked entries -inf; a model's
        layers by layer index (`result.layers[i]`); `tokens`; `meta`; with `predict` and `interventions`,
        `result.predictions`, `result.predictions_clean` and `result.output_similarity`. Raises
        `InvalidRequest` (422), `Unauthorized` (401), `LimitExceeded` (413), `ServiceUnavailable` (503, after
        the retries), `ServiceTimeout` (504), `APIError` (any other status)."""
        return decode(self._send("POST", "/attend", **_attend_request(locals())))

    def models(self) -> ModelList:
        """`GET /models`: the default model and every model for `text` (the toy mode included)."""
        return cast(ModelList, self._send("GET", "/models").json())

    def health(self) -> dict[str, Any]:
        """`GET /healthz`: the service's process is alive (raises otherwise)."""
        return cast(dict[str, Any], self._send("GET", "/healthz").json())

    def ready(self) -> bool:
        """`GET /readyz`: whether the service is ready to compute (False while it starts or replaces its
        compute processes)."""
        return self._http.get("/readyz").status_code == 200

    def _send(self, method: str, path: str, **request: Any) -> httpx.Response:
        retried = 0
        while True:
            response = self._http.request(method, path, **request)
            wait = self._settings.retry.wait_before_retry(response, retried)
            if wait is None:
                return _final(response)
            retried += 1
            time.sleep(wait)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class AsyncClient:
    """The asyncio client: the same arguments, answers and exceptions as `Client`, awaited. Use it in an
    `async with` block, or `await aclose()` it."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        api_key: str | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT_S,
        retries: int = 3,
        max_retry_wait: float = 30.0,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        self._settings = _Settings(api_key, headers, retries, max_retry_wait)
        self._http = httpx.AsyncClient(
            base_url=base_url, headers=self._settings.headers, timeout=timeout, transport=transport
        )

    async def attend(
        self,
        *,
        embeddings: npt.ArrayLike | None = None,
        context: npt.ArrayLike | None = None,
        query: npt.ArrayLike | None = None,
        key: npt.ArrayLike | None = None,
        value: npt.ArrayLike | None = None,
        text: str | Sequence[str] | None = None,
        model: str | None = None,
        layer: int | Sequence[int] | Literal["all"] | None = None,
        truncate: bool | None = None,
        d_model: int | None = None,
        weights: Weights | None = None,
        num_heads: int | None = None,
        d_k: int | None = None,
        d_v: int | None = None,
        scale: float | None = None,
        causal: bool | None = None,
        attention_mask: npt.ArrayLike | None = None,
        include: Sequence[TensorName] | None = None,
        top_k: int | None = None,
        pool: int | None = None,
        device: Device | None = None,
        dtype: Dtype | None = None,
        decimals: int | None = None,
        heads: Sequence[int] | None = None,
        queries: Sequence[int] | None = None,
        wire_dtype: WireDtype | None = None,
        predict: Predict | None = None,
        interventions: Sequence[Intervention] | None = None,
        clean: bool | None = None,
        generate: Generate | None = None,
    ) -> Attention:
        """`POST /attend`, as `Client.attend`."""
        return decode(await self._send("POST", "/attend", **_attend_request(locals())))

    async def models(self) -> ModelList:
        """`GET /models`, as `Client.models`."""
        return cast(ModelList, (await self._send("GET", "/models")).json())

    async def health(self) -> dict[str, Any]:
        """`GET /healthz`, as `Client.health`."""
        return cast(dict[str, Any], (await self._send("GET", "/healthz")).json())

    async def ready(self) -> bool:
        """`GET /readyz`, as `Client.ready`."""
        return (await self._http.get("/readyz")).status_code == 200

    async def _send(self, method: str, path: str, **request: Any) -> httpx.Response:
        retried = 0
        while True:
            response = await self._http.request(method, path, **request)
            wait = self._settings.retry.wait_before_retry(response, retried)
            if wait is None:
                return _final(response)
            retried += 1
            await asyncio.sleep(wait)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()
