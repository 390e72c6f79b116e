"""The compute pipeline in this process: service.compute.pipeline.answer, bytes to bytes, without HTTP,
sockets or compute processes. InProcess.post answers what POST /attend would answer for a body that passed the
server's byte limit and API key check; its reply reads like an httpx.Response (status_code, content, text,
json())."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from service.compute.models.registry import ModelRegistry
from service.compute.pipeline import answer, frames
from service.protocol import Frame, ResponseFormat
from service.settings import Settings

# tight limits, to reach every 413 with small requests (ATTENTION_* variables, as an operator sets them)
LIMITED_ENV = {
    "ATTENTION_MAX_REQUEST_BYTES": "20000",
    "ATTENTION_MAX_BATCH": "4",
    "ATTENTION_MAX_SEQ": "64",
    "ATTENTION_MAX_DIM": "256",
    "ATTENTION_MAX_HEADS": "8",
    "ATTENTION_MAX_RESPONSE_ELEMENTS": "5000",
    "ATTENTION_MAX_COMPUTE_ELEMENTS": "40000",
}


def settings_from_env(env: dict[str, str]) -> Settings:
    """Settings read from these environment variables (and no other ATTENTION_* one), as the server reads
    them."""
    with pytest.MonkeyPatch.context() as patch:
        for name in [name for name in os.environ if name.startswith("ATTENTION_")]:
            patch.delenv(name)
        for name, value in env.items():
            patch.setenv(name, value)
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

    def stream(self, body: dict[str, Any] | bytes) -> Iterator[Frame]:
        """The frames a compute process sends for `body` with Accept: application/x-ndjson, each made when
        the one before is taken."""
        return frames(_content(body), self.settings, self.models, ResponseFormat.NDJSON)


def _content(body: dict[str, Any] | bytes) -> bytes:
    return json.dumps(body).encode() if isinstance(body, dict) else body
