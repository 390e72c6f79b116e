"""The compute pipeline in this process: service.compute.pipeline.answer, bytes to bytes, without HTTP,
sockets or compute processes. InProcess.post answers what POST /attend would answer for a body that passed the
server's byte limit and API key check; its reply reads like an httpx.Response (status_code, content, text,
json()).

Shared by the in-process tests (tests/compute/) and scripts/ray_smoke_check.py, which compares a deployment's
answers with the pipeline's own."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from service.compute.models.registry import ModelRegistry
from service.compute.pipeline import answer, frames
from service.protocol import Frame, ResponseFormat
from service.settings import Settings


@contextmanager
def _only_these_settings(env: dict[str, str]) -> Iterator[None]:
    """os.environ with every ATTENTION_* variable replaced by `env`'s; what it changed is put back after."""

    def touched() -> list[str]:
        return [name for name in os.environ if name.startswith("ATTENTION_") or name in env]

    saved = {name: os.environ[name] for name in touched()}
    try:
        for name in touched():
            del os.environ[name]
        os.environ.update(env)
        yield
    finally:
        for name in touched():
            del os.environ[name]
        os.environ.update(saved)


def settings_from_env(env: dict[str, str]) -> Settings:
    """Settings read from these environment variables (and no other ATTENTION_* one), as the server reads
    them."""
    with _only_these_settings(env):
        return Settings()


@dataclass(frozen=True)
class Reply:
    status_code: int
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode()

    def json(self) -> Any:
        return json.loads(self.content)


class InProcess:
    """The pipeline with these settings and their models (loaded on first use, once per session)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.models = ModelRegistry.from_settings(settings.models)

    @classmethod
    def from_env(cls, env: dict[str, str]) -> InProcess:
        return cls(settings_from_env(env))

    def post(self, body: dict[str, Any] | bytes, media: ResponseFormat = ResponseFormat.JSON) -> Reply:
        """What POST /attend answers to `body` in the format `media` (sent in one piece); a dict is sent as
        JSON with NaN/Infinity written out, as many clients do (and as the
        HTTP tests' Server.post does)."""
        status, reply = answer(_content(body), self.settings, self.models, media)
        return Reply(status, reply)

    def stream(
        self, body: dict[str, Any] | bytes, media: ResponseFormat = ResponseFormat.NDJSON
    ) -> Iterator[Frame]:
        """The frames a compute process sends for `body` in the format `media` (a stream by default), each
        made when the one before is taken."""
        return frames(_content(body), self.settings, self.models, media)


def _content(body: dict[str, Any] | bytes) -> bytes:
    return json.dumps(body).encode() if isinstance(body, dict) else body
