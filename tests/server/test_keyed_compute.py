"""POST /attend's one dependency (service/server/security.py KeyedCompute) keeps what its three did: the API
key is checked first (a 401 with WWW-Authenticate, before the 503 of a service still starting), then the
computation must be started. In process, through the ASGI app without its lifespan: its computation is never
started."""

from __future__ import annotations

import asyncio
import json

import httpx
from pydantic import SecretStr

from service.server.app import create_app
from service.server.openapi_examples import load_golden
from service.settings import Settings

CAT = load_golden("seed_cat_eats_fish")
BODY = json.dumps({"embeddings": CAT["embeddings"], "weights": {"seed": 0}}).encode()


def _post(settings: Settings, headers: dict[str, str]) -> httpx.Response:
    async def post() -> httpx.Response:
        transport = httpx.ASGITransport(app=create_app(settings))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.post(
                "/attend", content=BODY, headers={"content-type": "application/json", **headers}
            )

    return asyncio.run(post())


def test_a_missing_or_wrong_key_is_refused_before_the_computation_is_looked_for():
    keyed = Settings(api_keys=[SecretStr("right")])
    missing = _post(keyed, {})
    assert missing.status_code == 401, missing.text
    assert missing.headers["www-authenticate"] == "ApiKey"
    assert "X-API-Key" in missing.json()["detail"]
    wrong = _post(keyed, {"x-api-key": "wrong"})
    assert wrong.status_code == 401 and "no valid key" in wrong.json()["detail"]


def test_a_right_key_or_none_needed_reaches_the_computation_still_starting():
    for settings, headers in (
        (Settings(api_keys=[SecretStr("right")]), {"x-api-key": "right"}),
        (Settings(), {}),
    ):
        starting = _post(settings, headers)
        assert starting.status_code == 503, starting.text
        assert "still starting" in starting.json()["detail"]
