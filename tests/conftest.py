"""Fixtures shared by the folders of tests: a tiny BERT (tests/compute/ and tests/server/), and the real
servers (devtools/servers.py: uvicorn in a subprocess, spoken to over a socket) of tests/server/ and
tests/docs/.

The shared servers start as soon as collection has found a selected test that uses them, without waiting: they
boot (torch, MiniLM: seconds of one core) while the in-process tests of tests/compute/ run on the other."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devtools.servers import Server
from tests.support.http import GUARDED_ENV
from tests.support.models import save_tiny_bert


@pytest.fixture(scope="session")
def tiny_bert_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised 2-layer BERT (d_model 32, 4 heads) saved as safetensors, MiniLM's tokenizer."""
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


def _logged(env: dict[str, str]) -> Callable[[], Server]:
    """Started with its log in a file of its own (the log of a subprocess started outside a test would go
    uncaptured to the terminal)."""

    def start() -> Server:
        log = Path(tempfile.mkdtemp(prefix="attention-test-")) / "service.log"
        return Server(env, log=log, wait=False)

    return start


SHARED: dict[str, Callable[[], Server]] = {"server": _logged({}), "guarded": _logged(GUARDED_ENV)}
_launched: dict[str, Server] = {}


def _launch(name: str) -> Server:
    if name not in _launched:
        _launched[name] = SHARED[name]()
    return _launched[name]


def pytest_collection_finish(session: pytest.Session) -> None:
    if session.config.option.collectonly:
        return
    used = {name for item in session.items for name in getattr(item, "fixturenames", ())}
    for name in SHARED:
        if name in used:
            _launch(name)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Launched servers whose tests never ran (deselected after a failure with -x, say) are stopped too."""
    for srv in _launched.values():
        srv.stop()


def _serve(name: str) -> Iterator[Server]:
    srv = _launch(name)
    srv.wait_ready()
    yield srv
    srv.stop()
    assert srv.log is not None
    shutil.rmtree(srv.log.parent, ignore_errors=True)


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    """The service with its default settings."""
    yield from _serve("server")


@pytest.fixture(scope="session")
def guarded() -> Iterator[Server]:
    """One compute process, one waiting place, an API key, a CORS origin, bodies of at most 20,000 bytes
    (GUARDED_ENV), and its log captured in guarded.log."""
    yield from _serve("guarded")
