"""Start-up over a real server: operator-added models are listed and served over HTTP, and a model that cannot
be served (tampered, pickled weights) stops the start with its reason logged. Each starts its own uvicorn."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from service.compute.models.registry import DEFAULT_MODEL
from tests.support.models import pickled_model, tampered_minilm
from tests.support.paths import ROOT
from tests.support.reference import check_parity
from tests.support.servers import SERVICE_APP, free_port

pytestmark = pytest.mark.slow

BATCH = ["The cat ate the fish because it was hungry", "Hi there", "Attention is a soft table look-up"]


def test_tiny_random_bert_through_the_settings_path_over_http(tiny_server, tiny_bert_folder):
    models = tiny_server.client.get("/models").json()
    tiny = next(m for m in models["models"] if m["name"] == "tiny-bert")
    assert (tiny["layers"], tiny["heads"], tiny["d_model"], tiny["max_length"], tiny["loaded"]) == (
        2,
        4,
        32,
        40,
        True,
    )
    response = tiny_server.post({"text": BATCH, "model": "tiny-bert"})
    check_parity(response, tiny_bert_folder, BATCH, [0, 1])
    too_many = tiny_server.post({"text": ["a"] * 5, "model": "tiny-bert"})
    assert too_many.status_code == 413 and too_many.json()["limit"] == "ATTENTION_MAX_BATCH"


def failed_start_up(models: dict[str, str]) -> str:
    """Starts uvicorn with these models, expects it to refuse to start, and returns what it logged."""
    env = {**os.environ, "ATTENTION_MODELS": json.dumps(models)}
    process = subprocess.run(
        [sys.executable, "-m", "uvicorn", SERVICE_APP, "--port", str(free_port())],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert process.returncode != 0
    return process.stderr


def test_tampered_weights_are_refused_at_start_up(tmp_path):
    tampered = tampered_minilm(tmp_path / "minilm")
    stderr = failed_start_up({DEFAULT_MODEL: str(tampered)})
    assert "SHA-256" in stderr and "refusing" in stderr


def test_only_safetensors_are_served_at_start_up(tmp_path):
    folder = pickled_model(tmp_path / "pickled")
    assert "only safetensors weights are served" in failed_start_up({"pickled": str(folder)})
