"""503 with Retry-After: the real service refuses a request while another one's declared body fills its
ATTENTION_MAX_BODY_BYTES_IN_FLIGHT (conftest.bodies_in_flight_full); the clients wait as asked and send again,
a bounded number of times. httpx's own transport carries the requests, wrapped to note when each one left
and was answered."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Any

import httpx
import numpy as np
import pytest

from attention_client import AsyncClient, Client, ServiceUnavailable
from attention_client.retry import RetryPolicy, retry_after
from devtools.servers import Server
from tests.client.conftest import bodies_in_flight_full
from tests.client.examples import cat_eats_fish_weights, golden
from tests.support.http import API_KEY

Exchange = tuple[float, float, int]  # sent at, answered at (monotonic), status


class Recorded(httpx.BaseTransport):
    def __init__(self, on_answer: Callable[[httpx.Response], None] = lambda _: None):
        self.inner, self.on_answer, self.exchanges = httpx.HTTPTransport(), on_answer, list[Exchange]()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        sent = time.monotonic()
        response = self.inner.handle_request(request)
        self.exchanges.append((sent, time.monotonic(), response.status_code))
        self.on_answer(response)
        return response

    def close(self) -> None:
        self.inner.close()


class AsyncRecorded(httpx.AsyncBaseTransport):
    def __init__(self, on_answer: Callable[[httpx.Response], None] = lambda _: None):
        self.inner, self.on_answer, self.exchanges = httpx.AsyncHTTPTransport(), on_answer, list[Exchange]()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        sent = time.monotonic()
        response = await self.inner.handle_async_request(request)
        self.exchanges.append((sent, time.monotonic(), response.status_code))
        self.on_answer(response)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


def waits(exchanges: list[Exchange]) -> list[float]:
    """Seconds between each answer and the next request."""
    return [later[0] - earlier[1] for earlier, later in zip(exchanges[:-1], exchanges[1:], strict=True)]


def request() -> dict[str, Any]:
    example = golden("seed_cat_eats_fish")
    return {"embeddings": example["embeddings"], "weights": cat_eats_fish_weights()}


def check_golden_weights(weights: np.ndarray) -> None:
    expected = golden("seed_cat_eats_fish")["expected"]["weights"]
    np.testing.assert_allclose(weights[0, 0], expected, rtol=0, atol=1e-6)


def test_a_503_is_sent_again_after_retry_after(service: Server):
    with bodies_in_flight_full(service) as blocker:
        # the service frees its room once it has refused the client's first try
        transport = Recorded(lambda response: blocker.close() if response.status_code == 503 else None)
        with Client(service.url, api_key=API_KEY, transport=transport) as client:
            result = client.attend(**request())
    assert [status for *_, status in transport.exchanges] == [503, 200]
    assert waits(transport.exchanges)[0] >= 1.0  # the service's Retry-After: 1
    check_golden_weights(result.weights)


def test_the_async_client_waits_as_asked_too(service: Server):
    async def attend(blocker_close: Callable[[], None]) -> tuple[np.ndarray, AsyncRecorded]:
        transport = AsyncRecorded(lambda response: blocker_close() if response.status_code == 503 else None)
        async with AsyncClient(service.url, api_key=API_KEY, transport=transport) as client:
            return (await client.attend(**request())).weights, transport

    with bodies_in_flight_full(service) as blocker:
        weights, transport = asyncio.run(attend(blocker.close))
    assert [status for *_, status in transport.exchanges] == [503, 200]
    assert waits(transport.exchanges)[0] >= 1.0
    check_golden_weights(weights)


@pytest.mark.slow
def test_retries_are_bounded_then_the_503_is_raised(service: Server):
    transport = Recorded()
    with (
        bodies_in_flight_full(service),
        Client(service.url, api_key=API_KEY, retries=2, transport=transport) as client,
        pytest.raises(ServiceUnavailable) as caught,
    ):
        client.attend(**request())
    assert [status for *_, status in transport.exchanges] == [503, 503, 503]
    assert all(wait >= 1.0 for wait in waits(transport.exchanges))
    error = caught.value
    assert (error.status, error.retry_after) == (503, 1.0)
    assert "ATTENTION_MAX_BODY_BYTES_IN_FLIGHT" in error.message


@pytest.mark.parametrize(
    "settings", [{"retries": 0}, {"max_retry_wait": 0.5}], ids=["no retries", "wait too long"]
)
def test_no_retry_when_retries_are_off_or_the_wait_is_too_long(service: Server, settings):
    transport = Recorded()
    with (
        bodies_in_flight_full(service),
        Client(service.url, api_key=API_KEY, transport=transport, **settings) as client,
        pytest.raises(ServiceUnavailable) as caught,
    ):
        client.attend(**request())
    assert [status for *_, status in transport.exchanges] == [503]
    assert caught.value.retry_after == 1.0


def test_retry_after_as_seconds_or_an_http_date():
    def parsed(value: str) -> float | None:
        return retry_after(httpx.Response(503, headers={"retry-after": value}))

    assert parsed("1") == 1.0 and parsed(" 2.5 ") == 2.5 and parsed("-3") == 0.0
    later = datetime.now(timezone.utc) + timedelta(seconds=30)
    assert parsed(format_datetime(later, usegmt=True)) == pytest.approx(30, abs=2)
    assert parsed("soon") is None and parsed("nan") is None
    assert retry_after(httpx.Response(503)) is None
    policy = RetryPolicy(retries=1, max_wait=5)
    assert policy.wait_before_retry(httpx.Response(503, headers={"retry-after": "2"}), retried=0) == 2.0
    assert policy.wait_before_retry(httpx.Response(503, headers={"retry-after": "2"}), retried=1) is None
    assert policy.wait_before_retry(httpx.Response(503), retried=0) is None  # a model that cannot be served
    assert policy.wait_before_retry(httpx.Response(504, headers={"retry-after": "1"}), retried=0) is None
    with pytest.raises(ValueError, match="retries must be >= 0"):
        RetryPolicy(retries=-1)
