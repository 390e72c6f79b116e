"""The asyncio client answers as the blocking one: the same arrays, layers, tokens, meta and exceptions, also
for requests awaited together."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from attention_client import AsyncClient, Attention, Client, InvalidRequest, Unauthorized
from devtools.servers import Server
from tests.client.examples import cat_eats_fish_weights, golden
from tests.support.http import API_KEY

CAT = golden("seed_cat_eats_fish")
AGE = golden("seed_age_lookup")
CALLS: list[dict[str, Any]] = [
    {"embeddings": CAT["embeddings"], "weights": cat_eats_fish_weights("out_in"), "dtype": "float64"},
    {"query": AGE["query"], "key": AGE["key"], "value": AGE["value"], "scale": 1.0},
    {"text": ["a b", "the cat sat"], "layer": [0, 5], "include": ["weights", "scaled_scores"]},
    {"text": "猫 吃 鱼", "model": "toy", "num_heads": 2, "causal": True, "weights": {"seed": 3}},
]
RAGGED: dict[str, Any] = {"embeddings": [[1.0], [2.0, 3.0]]}


def same(one: Attention, other: Attention) -> None:
    assert list(one) == list(other) and list(one.layers) == list(other.layers)
    for name in one:
        np.testing.assert_array_equal(one[name], other[name], err_msg=name)
    for index, layer in one.layers.items():
        assert layer.axes == other.layers[index].axes
        for name in layer:
            np.testing.assert_array_equal(layer[name], other.layers[index][name], err_msg=f"{index}.{name}")
    assert one.axes == other.axes and one.tokens == other.tokens
    assert {**one.meta, "elapsed_ms": 0} == {**other.meta, "elapsed_ms": 0}


def test_async_client_answers_as_the_blocking_one(service: Server, client: Client):
    async def run() -> tuple[list[Attention], Any, InvalidRequest, Unauthorized, bool]:
        async with AsyncClient(service.url, api_key=API_KEY) as aclient:
            results = await asyncio.gather(*(aclient.attend(**call) for call in CALLS))
            models = await aclient.models()
            try:
                await aclient.attend(**RAGGED)
            except InvalidRequest as error:
                invalid = error
            ready = await aclient.ready() and (await aclient.health())["status"] == "ok"
        async with AsyncClient(service.url, api_key="not-the-key") as stranger:
            try:
                await stranger.models()
            except Unauthorized as error:
                refused = error
        return results, models, invalid, refused, ready

    results, models, invalid, refused, ready = asyncio.run(run())
    assert ready
    for call, result in zip(CALLS, results, strict=True):
        same(result, client.attend(**call))
    assert (
        results[3].tokens == [["猫", "吃", "鱼"]] and np.isneginf(results[3].scaled_scores[0, :, 0, 1]).all()
    )
    assert models == client.models()
    with pytest.raises(InvalidRequest) as caught:
        client.attend(**RAGGED)
    assert (invalid.status, invalid.message, invalid.errors) == (
        422,
        caught.value.message,
        caught.value.errors,
    )
    with Client(service.url, api_key="not-the-key") as stranger, pytest.raises(Unauthorized) as unauthorized:
        stranger.models()
    assert (refused.status, str(refused)) == (401, str(unauthorized.value))
