"""Models named by Hugging Face Hub id, fetched at start-up from a local Hub (tests/support/local_hub.py, at
HF_ENDPOINT) by a real uvicorn: the fetch, the pinned revision in GET /models and `meta`, a restart from the
cache with the Hub gone, a cached file that differs from its pin, and the refusals that stop the start-up
with one clear line naming the model (no traceback): the network down, a revision the Hub answers with
another commit, a file the Hub lists but cannot serve, a repository whose weights are pickles only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from devtools.paths import ROOT
from devtools.servers import SERVICE_APP, Server, free_port
from tests.support.local_hub import LocalHub, Repository

pytestmark = pytest.mark.slow  # each test starts uvicorn (seconds); .ci/run runs them with the whole suite

REPO = "test-org/tiny-gpt2"
PINNED = "0123456789abcdef0123456789abcdef01234567"
OTHER = "fedcba9876543210fedcba9876543210fedcba98"
# files with the names the service fetches; their contents matter only once a model is served
FILES = {
    "config.json": b'{"model_type": "gpt2"}',
    "tokenizer.json": b"{}",
    "tokenizer_config.json": b"{}",
    "model.safetensors": b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ",
    "README.md": b"# not fetched",
    "pytorch_model.bin": b"never fetched",
}


def hub_env(hub_url: str, cache: Path, source: dict[str, Any], **more: str) -> dict[str, str]:
    return {
        "HF_ENDPOINT": hub_url,
        "HF_HUB_OFFLINE": "0",  # the operator's shell has none; the test process may have set one
        "HF_HOME": str(cache.parent / "hf-home"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "ATTENTION_HUB_CACHE": str(cache),
        "ATTENTION_MODELS": json.dumps({"tiny": source}),
        **more,
    }


def eager_weights(folder: Path, text: str) -> list[Any]:
    """transformers' eager attention weights of each layer for `text`, from the model's own folder."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(folder, attn_implementation="eager", local_files_only=True).eval()
    encoded = AutoTokenizer.from_pretrained(folder, local_files_only=True)(text, return_tensors="pt")
    with torch.no_grad():
        return [layer.numpy() for layer in model(**encoded, output_attentions=True).attentions]


def check_weights(answer: dict[str, Any], expected: list[Any]) -> None:
    assert [entry["layer"] for entry in answer["layers"]] == [0, 2]
    for entry in answer["layers"]:
        np.testing.assert_allclose(np.asarray(entry["weights"]), expected[entry["layer"]], atol=1e-5)


def failed_start_up(env: dict[str, str]) -> str:
    """Starts uvicorn, expects it to refuse to start, and returns what it logged."""
    process = subprocess.run(
        [sys.executable, "-m", "uvicorn", SERVICE_APP, "--port", str(free_port())],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert process.returncode != 0, process.stderr[-2000:]
    assert "Traceback" not in process.stderr, process.stderr[-4000:]
    return process.stderr


def refusal(stderr: str) -> str:
    """The start-up failure's message: the one error line that names a model."""
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    failures = [
        line["message"] for line in lines if line["message"].startswith("start-up failed: model 'tiny'")
    ]
    assert len(failures) == 1, stderr[-4000:]
    return str(failures[0])


def test_the_network_down_stops_the_start_with_the_model_named(tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    message = refusal(failed_start_up(hub_env(dead, tmp_path / "cache", {"hub": REPO})))
    assert f"could not look up {REPO} at revision 'main' on {dead}" in message
    assert "ConnectError" in message and "check the network" in message


def test_a_commit_the_hub_answers_with_another_is_refused(tmp_path):
    with LocalHub({REPO: Repository(dict(FILES), commit=PINNED, answered_commit=OTHER)}) as hub:
        env = hub_env(hub.url, tmp_path / "cache", {"hub": REPO, "revision": PINNED})
        message = refusal(failed_start_up(env))
        assert hub.fetched_files() == []
    assert f"asked for {REPO} at commit {PINNED}, the Hub answered commit {OTHER}" in message
    assert not (tmp_path / "cache" / "attention-service-pins").exists()


def test_an_unknown_revision_is_refused_by_name(tmp_path):
    with LocalHub({REPO: Repository(dict(FILES))}) as hub:
        message = refusal(
            failed_start_up(hub_env(hub.url, tmp_path / "cache", {"hub": REPO, "revision": "v9"}))
        )
    assert f"could not look up {REPO} at revision 'v9'" in message and "RevisionNotFoundError" in message


def test_a_file_the_hub_lists_but_cannot_serve_is_refused(tmp_path):
    with LocalHub({REPO: Repository(dict(FILES), missing={"model.safetensors"})}) as hub:
        message = refusal(failed_start_up(hub_env(hub.url, tmp_path / "cache", {"hub": REPO})))
    assert f"could not fetch model.safetensors of {REPO} at commit {PINNED}" in message
    assert "EntryNotFoundError" in message
    # nothing pinned: the next start tries again
    assert not (tmp_path / "cache" / "attention-service-pins").exists()


def test_a_repository_of_pickles_only_is_refused_and_nothing_of_it_fetched(tmp_path):
    pickled = {name: content for name, content in FILES.items() if name != "model.safetensors"}
    with LocalHub({REPO: Repository(pickled)}) as hub:
        message = refusal(failed_start_up(hub_env(hub.url, tmp_path / "cache", {"hub": REPO})))
        fetched = hub.fetched_files()
    assert "found only pytorch_model.bin" in message and "never pickles" in message
    assert "pytorch_model.bin" not in fetched


def test_a_hub_source_states_one_place(tmp_path):
    """A source with both `path` and `hub`, or a malformed id, is refused before anything is fetched."""
    both = {"ATTENTION_MODELS": json.dumps({"tiny": {"hub": REPO, "path": str(tmp_path)}})}
    process = subprocess.run(
        [sys.executable, "-c", "from service.settings import Settings; Settings()"],
        cwd=ROOT,
        env={**os.environ, **both},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert process.returncode != 0 and 'give one of "path"' in process.stderr


def test_fetched_served_pinned_restarted_offline_and_checked(tmp_path):
    """The first start fetches the model's safetensors, config and tokenizer (no README, no pickle) and pins
    its commit; GET /models and `meta` report it; a restart with the Hub gone starts from the cache; a cached
    file changed behind the service's back stops the next start."""
    from tests.support.families import save_family_model

    folder = save_family_model("gpt2", tmp_path / "tiny-gpt2")
    files = {path.name: path.read_bytes() for path in folder.iterdir()}
    files.update({"README.md": b"# a tiny GPT-2", "pytorch_model.bin": b"never fetched"})
    cache = tmp_path / "cache"
    text = "The cat ate the fish because it was hungry"
    expected = eager_weights(folder, text)
    lazy = {"ATTENTION_MAX_CONCURRENT": "1", "ATTENTION_LOAD_MODELS": "lazy"}
    with LocalHub({REPO: Repository(files)}) as hub:
        with Server(hub_env(hub.url, cache, {"hub": REPO}, **lazy)) as server:
            listed = {m["name"]: m for m in server.client.get("/models").json()["models"]}
            assert (listed["tiny"]["hub"], listed["tiny"]["revision"]) == (REPO, PINNED)
            assert listed["tiny"]["family"] == "gpt2"
            response = server.post({"text": text, "model": "tiny", "layer": [0, 2], "include": ["weights"]})
            assert response.status_code == 200, response.text
            assert response.json()["meta"]["model_revision"] == PINNED
            check_weights(response.json(), expected)
        fetched = sorted(hub.fetched_files())
    served = sorted(name for name in files if name not in ("README.md", "pytorch_model.bin"))
    assert fetched == served
    pin = json.loads((cache / "attention-service-pins" / "test-org--tiny-gpt2@main.json").read_text())
    assert pin["commit"] == PINNED and sorted(pin["files"]) == served

    # the Hub is gone: the pin and the cache are enough
    dead = f"http://127.0.0.1:{free_port()}"
    with Server(hub_env(dead, cache, {"hub": REPO}, **lazy)) as server:
        listed = {m["name"]: m for m in server.client.get("/models").json()["models"]}
        assert listed["tiny"]["revision"] == PINNED
        response = server.post({"text": text, "model": "tiny", "layer": [0, 2], "include": ["weights"]})
        assert response.status_code == 200, response.text
        check_weights(response.json(), expected)

    cached = next(cache.glob("models--test-org--tiny-gpt2/snapshots/*/config.json")).resolve()
    cached.write_bytes(cached.read_bytes().replace(b"{", b"{ ", 1))
    message = refusal(failed_start_up(hub_env(dead, cache, {"hub": REPO}, **lazy)))
    assert f"the cached config.json of {REPO} at commit {PINNED}" in message
    assert "differs from the pinned one" in message
