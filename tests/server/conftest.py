"""Servers and a browser of the HTTP tests alone; the shared real servers (`server`, `guarded`) are in
tests/conftest.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.servers import Server
from tests.support.browser import chromium


@pytest.fixture(scope="session")
def tiny_server(tiny_bert_folder: Path) -> Iterator[Server]:
    """The service with the tiny BERT added through the operator's settings path."""
    env = {"ATTENTION_MODELS": json.dumps({"tiny-bert": str(tiny_bert_folder)}), "ATTENTION_MAX_BATCH": "4"}
    with Server(env) as srv:
        yield srv


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Chromium for one test module's browser tests (tests/support/browser.py)."""
    with chromium() as launched:
        yield launched
