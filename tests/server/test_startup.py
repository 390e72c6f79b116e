"""Start-up over a real server: operator-added models are listed and served over HTTP, and a model that cannot
be served (tampered, pickled weights) stops the start with its reason logged. Each starts its own uvicorn."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from devtools.paths import ROOT
from devtools.servers import SERVICE_APP, Server, free_port
from service.settings import BUNDLED_MODEL
from tests.support.families import WINDOW, save_family_model
from tests.support.models import pickled_model, tampered_minilm
from tests.support.reference import check_parity

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
    stderr = failed_start_up({BUNDLED_MODEL: str(tampered)})
    assert "SHA-256" in stderr and "refusing" in stderr


def test_only_safetensors_are_served_at_start_up(tmp_path):
    folder = pickled_model(tmp_path / "pickled")
    assert "only safetensors weights are served" in failed_start_up({"pickled": str(folder)})


def test_decoder_families_listed_and_served_over_http(tmp_path):
    """Lazy loading: GET /models describes the unloaded models from their config and weights' headers
    (family, kind, positions, kv heads, window, cap, dtype, parameters); a request then loads and serves
    them."""
    gemma2 = save_family_model("gemma2", tmp_path / "gemma2")
    mistral = save_family_model("mistral", tmp_path / "mistral")
    models = {"tiny-gemma2": str(gemma2), "tiny-mistral": {"path": str(mistral), "dtype": "bfloat16"}}
    env = {"ATTENTION_MODELS": json.dumps(models), "ATTENTION_LOAD_MODELS": "lazy"}
    with Server(env) as server:
        listed = {m["name"]: m for m in server.client.get("/models").json()["models"]}
        facts = (
            "family",
            "kind",
            "positions",
            "heads",
            "kv_heads",
            "head_size",
            "window",
            "softcap",
            "dtype",
        )
        assert {k: listed["tiny-gemma2"][k] for k in facts} == {
            "family": "gemma2",
            "kind": "decoder",
            "positions": "rotary",
            "heads": 4,
            "kv_heads": 2,
            "head_size": 16,
            "window": WINDOW,
            "softcap": 2.0,
            "dtype": "float32",
        }
        assert listed["tiny-mistral"]["dtype"] == "bfloat16" and listed["tiny-mistral"]["loaded"] is False
        assert listed["tiny-gemma2"]["parameters"] > 10_000 and listed["tiny-gemma2"]["max_length"] == 48
        response = server.post({"text": "Hi there", "model": "tiny-mistral", "include": ["weights", "k"]})
        assert response.status_code == 200, response.text
        meta = response.json()["meta"]
        assert meta["num_kv_heads"] == 2 and meta["causal"] is True and meta["sliding_window"] == [WINDOW] * 3


def test_unsupported_model_type_stops_the_start_with_the_supported_list(tmp_path):
    from transformers import OPTConfig

    folder = save_family_model("gpt2", tmp_path / "opt")
    OPTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, ffn_dim=32).save_pretrained(folder)
    stderr = failed_start_up({"opt": str(folder)})
    assert "found model_type 'opt'" in stderr and "supported: model_type bert, roberta" in stderr
