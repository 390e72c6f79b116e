"""Real servers for the tests: uvicorn in a subprocess on a free loopback port, spoken to over a socket."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_GOLDEN = ROOT.parent / "shared" / "golden"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(
        self,
        env: dict[str, str],
        startup_timeout: float = 120,
        log: Path | None = None,
        uvicorn_args: tuple[str, ...] = (),
    ):
        """env: ATTENTION_* settings; log: a file for the service's stderr (its JSON log lines)."""
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "service.server.app:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
                *uvicorn_args,
            ],
            cwd=ROOT,
            env={**os.environ, **env},
            stderr=log.open("wb") if log else None,
        )
        deadline = time.monotonic() + startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"uvicorn exited with {self.process.returncode}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        else:
            raise RuntimeError(f"uvicorn did not become ready in {startup_timeout} s")
        self.client = httpx.Client(base_url=self.url, timeout=60)

    def post(self, body: dict | bytes, **kwargs) -> httpx.Response:
        """POST /attend; a dict is sent as JSON with NaN/Infinity written out, as many clients do."""
        content = json.dumps(body).encode() if isinstance(body, dict) else body
        return self.client.post(
            "/attend", content=content, headers={"content-type": "application/json"}, **kwargs
        )

    def stop(self) -> None:
        self.client.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    """The service with its default settings."""
    srv = Server({})
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def limited_server() -> Iterator[Server]:
    """The service with tight limits, to reach every 413 with small requests."""
    srv = Server(
        {
            "ATTENTION_MAX_REQUEST_BYTES": "20000",
            "ATTENTION_MAX_BATCH": "4",
            "ATTENTION_MAX_SEQ": "64",
            "ATTENTION_MAX_DIM": "256",
            "ATTENTION_MAX_HEADS": "8",
            "ATTENTION_MAX_RESPONSE_ELEMENTS": "5000",
            "ATTENTION_MAX_COMPUTE_ELEMENTS": "40000",
        }
    )
    yield srv
    srv.stop()


TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


@pytest.fixture(scope="session")
def tiny_bert_folder(tmp_path_factory) -> Path:
    """A randomly initialised 2-layer BERT (d_model 32, 4 heads) saved as safetensors, with MiniLM's tokenizer."""
    import shutil

    import torch
    from transformers import BertConfig, BertModel

    from service.compute.models.registry import bundled_folder

    folder = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=40,
    )
    BertModel(config).save_pretrained(folder, safe_serialization=True)
    for name in TOKENIZER_FILES:
        shutil.copy(bundled_folder() / name, folder / name)
    return folder


@pytest.fixture(scope="session")
def tiny_server(tiny_bert_folder) -> Iterator[Server]:
    """The service with the tiny BERT added through the operator's settings path."""
    srv = Server(
        {"ATTENTION_MODELS": json.dumps({"tiny-bert": str(tiny_bert_folder)}), "ATTENTION_MAX_BATCH": "4"}
    )
    yield srv
    srv.stop()
