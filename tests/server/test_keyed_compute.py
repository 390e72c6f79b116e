"""POST /attend's one dependency (service/server/security.py KeyedCompute) keeps what its three did: the API
key is checked first (a 401 with WWW-Authenticate, before the 503 of a service still starting), then the
computation must be started; and the route that serves it (routes/attend.py SERVED) does so without FastAPI's
dependency solving. In process, through the ASGI app without its lifespan: its computation is never
started."""

from __future__ import annotations

import asyncio
import json

import fastapi.routing
import httpx
import pytest
from pydantic import SecretStr

from service.server.app import create_app
from service.server.openapi_examples import load_golden
from service.settings import Settings

CAT = load_golden("seed_cat_eats_fish")
BODY = json.dumps({"embeddings": CAT["embeddings"], "weights": {"seed": 0}}).encode()


def _post(settings: Settings, headers: dict[str, str], method: str = "POST") -> httpx.Response:
    async def post() -> httpx.Response:
        transport = httpx.ASGITransport(app=create_app(settings))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.request(
                method, "/attend", content=BODY, headers={"content-type": "application/json", **headers}
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


def test_post_attend_is_served_without_fastapis_dependency_solving(monkeypatch: pytest.MonkeyPatch):
    """FastAPI's routing and dependency solving cost the server process about a third of a small request's
    CPU (issue 26): the requests of POST /attend go through none, and keep its answers (the 401 and the 503
    above); another method still gets FastAPI's 405 in the service's {"detail"} dialect."""
    solved: list[object] = []
    solve = getattr(fastapi.routing, "solve_dependencies")  # noqa: B009 (not exported: mypy)

    async def counted(*args: object, **kwargs: object) -> object:
        solved.append(kwargs.get("request"))
        return await solve(*args, **kwargs)

    monkeypatch.setattr(fastapi.routing, "solve_dependencies", counted)
    assert _post(Settings(), {}).status_code == 503
    assert solved == []
    refused = _post(Settings(), {}, method="GET")
    assert refused.status_code == 405 and refused.json() == {"detail": "Method Not Allowed"}
