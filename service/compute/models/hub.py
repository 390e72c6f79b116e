"""Models named by Hugging Face Hub id (ATTENTION_MODELS='{"gpt2": {"hub": "openai-community/gpt2"}}'),
fetched once at start-up with huggingface_hub into the cache folder (ATTENTION_HUB_CACHE) and pinned there.

Only what the service reads is fetched: config.json, the tokenizer's files and safetensors weights (one file,
or the shards its index names); never a pickle (pytorch_model.bin, *.pt, *.ckpt): a repository with no
safetensors weights is refused. The first fetch resolves the revision asked for (a branch, tag or commit;
main by default) to a commit and writes a pin: that commit and the SHA-256 of every file. Every later start
uses the pin: no network, the pinned commit's files from the cache, each checked against its SHA-256. A model
whose revision cannot be resolved, whose files cannot be fetched or whose cached files differ from the pin
stops the start-up with a ModelError naming the model. Nothing is fetched unless an operator names a Hub
model. Runs in the server process before any compute process starts (and in each Ray Serve replica): it
imports no torch.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from service.errors import ModelError
from service.settings import HUB_ID, ModelSource, Settings

log = logging.getLogger("attention_service.hub")

CONFIG = "config.json"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
# the tokenizer's files, whichever of them a repository has (fast tokenizer, vocabularies, sentencepiece)
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
    "chat_template.jinja",
)
# weights in Python's pickle format: loading one runs code it names, so none is ever fetched
PICKLED = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl", "*.pickle")
COMMIT = re.compile(r"[0-9a-f]{40}")
DEFAULT_REVISION = "main"
PINS = "attention-service-pins"  # the folder of the pins, in the cache


@dataclass(frozen=True)
class Pin:
    """What the first fetch of a model settled: the commit of the revision asked for, and its files."""

    hub: str
    revision: str  # as the operator asked for it
    commit: str
    files: dict[str, str]  # file name -> SHA-256

    def to_json(self) -> str:
        return json.dumps(
            {"hub": self.hub, "revision": self.revision, "commit": self.commit, "files": self.files}, indent=1
        )


def cache_folder(settings: Settings) -> Path:
    if settings.hub_cache is not None:
        return Path(settings.hub_cache).expanduser()
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def pin_path(cache: Path, hub: str, revision: str) -> Path:
    return cache / PINS / f"{hub.replace('/', '--')}@{quote(revision, safe='')}.json"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetched(settings: Settings) -> Settings:
    """The settings with every Hub model's source completed: `path` its folder in the cache, `revision` its
    pinned commit. Settings without a Hub model are returned as they are, and nothing is imported or
    fetched."""
    hub_models = {
        name: source
        for name, source in settings.models.items()
        if isinstance(source, ModelSource) and source.hub is not None and source.path is None
    }
    if not hub_models:
        return settings
    from huggingface_hub.utils.tqdm import disable_progress_bars

    disable_progress_bars()  # the log says what was fetched, as JSON lines
    cache = cache_folder(settings)
    models = dict(settings.models)
    for name, source in hub_models.items():
        models[name] = fetch(name, source, cache)
    return settings.model_copy(update={"models": models})


def fetch(name: str, source: ModelSource, cache: Path) -> ModelSource:
    """The source of one Hub model, completed with its folder and commit: from the pin in the cache when there
    is one, else fetched and pinned."""
    assert source.hub is not None
    revision = source.revision or DEFAULT_REVISION
    pinned = pin_path(cache, source.hub, revision)
    if pinned.is_file():
        pin = _read_pin(name, pinned)
        folder = _pinned_folder(name, pin, cache, pinned)
        log.info("model %s: %s at commit %s, pinned in %s", name, source.hub, pin.commit, pinned)
    else:
        pin, folder = _fetch_and_pin(name, source.hub, revision, cache, pinned)
    return source.model_copy(update={"path": str(folder), "revision": pin.commit})


def _read_pin(name: str, path: Path) -> Pin:
    try:
        data = json.loads(path.read_text())
        pin = Pin(data["hub"], data["revision"], data["commit"], dict(data["files"]))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ModelError(
            f"model {name!r}: its pin {path} is unreadable ({error}); delete it to fetch the model again"
        ) from None
    if not COMMIT.fullmatch(pin.commit) or not pin.files:
        raise ModelError(
            f"model {name!r}: its pin {path} names no commit or no files; delete it to fetch again"
        )
    return pin


def _pinned_folder(name: str, pin: Pin, cache: Path, pinned: Path) -> Path:
    """The pinned commit's folder in the cache, each file checked against its pinned SHA-256; a file missing
    from the cache (deleted) is fetched again at the pinned commit, and must then match too."""
    paths = {file: _cached(pin.hub, file, pin.commit, cache) for file in pin.files}
    missing = [file for file, path in paths.items() if path is None]
    if missing:
        log.info("model %s: fetching %s again at its pinned commit %s", name, ", ".join(missing), pin.commit)
        for file in missing:
            paths[file] = _download(name, pin.hub, file, pin.commit, cache)
    for file, path in paths.items():
        assert path is not None
        if (found := sha256(path)) != pin.files[file]:
            raise ModelError(
                f"model {name!r}: the cached {file} of {pin.hub} at commit {pin.commit} has SHA-256 {found}, "
                f"pinned {pin.files[file]}; refusing a file that differs from the pinned one (delete "
                f"{path.parent} to fetch it again, or {pinned} to pin the revision anew)"
            )
    return _one_folder(name, paths)


def _one_folder(name: str, paths: dict[str, Path | None]) -> Path:
    folders = {path.parent for path in paths.values() if path is not None}
    if len(folders) != 1:
        raise ModelError(
            f"model {name!r}: its files are in {len(folders)} folders of the cache; expected one"
        )
    return folders.pop()


def _cached(hub: str, file: str, commit: str, cache: Path) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(hub, file, cache_dir=cache, revision=commit)
    return Path(found) if isinstance(found, str) else None


def _fetch_and_pin(name: str, hub: str, revision: str, cache: Path, pinned: Path) -> tuple[Pin, Path]:
    from huggingface_hub import HfApi, constants

    started = time.perf_counter()
    try:
        info = HfApi().model_info(hub, revision=revision, files_metadata=True)
    except Exception as error:  # whatever huggingface_hub raises (no network, no such repository or revision)
        raise ModelError(
            f"model {name!r}: could not look up {hub} at revision {revision!r} on {constants.ENDPOINT}: "
            f"{_reason(error)}. A Hub model is fetched once, at the first start (later starts use the cache "
            f"in {cache}): check the network, the id and the revision, or HF_TOKEN for a gated model"
        ) from None
    commit = info.sha
    if commit is None or not COMMIT.fullmatch(commit):
        raise ModelError(f"model {name!r}: the Hub named no commit for {hub} at revision {revision!r}")
    if COMMIT.fullmatch(revision) and commit != revision:
        raise ModelError(
            f"model {name!r}: asked for {hub} at commit {revision}, the Hub answered commit {commit}; "
            "refusing files of another commit than the one pinned"
        )
    listed = {sibling.rfilename: sibling for sibling in info.siblings or []}
    files = _files_to_fetch(name, hub, commit, listed, cache)
    paths = {file: _download(name, hub, file, commit, cache) for file in files}
    digests = {file: sha256(path) for file, path in paths.items()}
    for file, digest in digests.items():
        lfs = getattr(listed.get(file), "lfs", None)
        if lfs is not None and lfs.sha256 != digest:
            raise ModelError(
                f"model {name!r}: {file} of {hub} at commit {commit} has SHA-256 {digest}, the Hub lists "
                f"{lfs.sha256}; refusing a file that differs from the Hub's"
            )
    folder = _one_folder(name, dict(paths))
    pin = Pin(hub, revision, commit, digests)
    pinned.parent.mkdir(parents=True, exist_ok=True)
    partial = pinned.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text(pin.to_json())
    partial.replace(pinned)  # whole or absent: an interrupted start leaves no half pin
    size = sum(path.stat().st_size for path in paths.values())
    log.info(
        "model %s: fetched %s at commit %s (%d files, %.1f MB) in %.1f s into %s; pinned in %s",
        name,
        hub,
        commit,
        len(paths),
        size / 1e6,
        time.perf_counter() - started,
        folder,
        pinned,
    )
    return pin, folder


def _files_to_fetch(name: str, hub: str, commit: str, listed: dict[str, Any], cache: Path) -> list[str]:
    """config.json, the tokenizer's files and the safetensors weights of the repository's top folder; a
    ModelError when one of them is missing or the weights are pickles only."""
    where = f"{hub} at commit {commit}"
    if CONFIG not in listed:
        raise ModelError(f"model {name!r}: {where} has no {CONFIG}; expected a transformers model repository")
    tokenizer = [file for file in TOKENIZER_FILES if file in listed]
    if not tokenizer:
        raise ModelError(
            f"model {name!r}: {where} has no tokenizer files; expected one of {', '.join(TOKENIZER_FILES)}"
        )
    if WEIGHTS_FILE in listed:
        weights = [WEIGHTS_FILE]
    elif WEIGHTS_INDEX in listed:
        index = _download(name, hub, WEIGHTS_INDEX, commit, cache)
        weights = [WEIGHTS_INDEX, *_shards(name, where, index, listed)]
    else:
        pickled = sorted(f for f in listed if "/" not in f and any(fnmatch.fnmatch(f, p) for p in PICKLED))
        found = f"found only {', '.join(pickled)}" if pickled else "found no weights"
        raise ModelError(
            f"model {name!r}: {where} has no {WEIGHTS_FILE} nor {WEIGHTS_INDEX} ({found}); only safetensors "
            "weights are fetched and served, never pickles (choose a revision or a copy of the model with "
            "safetensors weights)"
        )
    return [CONFIG, *tokenizer, *weights]


def _shards(name: str, where: str, index: Path, listed: dict[str, Any]) -> list[str]:
    try:
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise ModelError(f"model {name!r}: {WEIGHTS_INDEX} of {where} is unreadable ({error})") from None
    unsafe = [s for s in shards if not isinstance(s, str) or "/" in s or not s.endswith(".safetensors")]
    missing = [s for s in shards if s not in unsafe and s not in listed]
    if unsafe or missing or not shards:
        raise ModelError(
            f"model {name!r}: {WEIGHTS_INDEX} of {where} names non-safetensors files {unsafe} or files the "
            f"repository lacks {missing}"
        )
    return shards


def _download(name: str, hub: str, file: str, commit: str, cache: Path) -> Path:
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(hub, file, revision=commit, cache_dir=cache))
    except Exception as error:  # whatever huggingface_hub raises (network, missing file, disk full)
        raise ModelError(
            f"model {name!r}: could not fetch {file} of {hub} at commit {commit}: {_reason(error)}"
        ) from None


def _reason(error: BaseException) -> str:
    """An exception of huggingface_hub or of the network, in one line."""
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:400]}" if text else type(error).__name__


def short_form(text: str) -> dict[str, dict[str, str]]:
    """ATTENTION_MODELS entries of scripts/serve.sh's MODELS=gpt2,Qwen/Qwen2.5-0.5B: comma-separated Hub ids,
    each served under its id, or under `name` as name=id, at a revision as id@revision; a ValueError names
    an entry that is none of these."""
    models: dict[str, dict[str, str]] = {}
    for entry in filter(None, (part.strip() for part in text.split(","))):
        name, _, spec = entry.rpartition("=")
        hub, _, revision = spec.partition("@")
        if not re.fullmatch(HUB_ID, hub) or (not name and "=" in entry) or ("@" in spec and not revision):
            raise ValueError(
                f"found {entry!r} in MODELS; expected a Hugging Face Hub id (gpt2, Qwen/Qwen2.5-0.5B), "
                "optionally name=id and id@revision"
            )
        models[name or hub] = {"hub": hub, **({"revision": revision} if revision else {})}
    return models


if __name__ == "__main__":  # scripts/serve.sh: MODELS merged into ATTENTION_MODELS, printed as its JSON
    import sys

    try:
        named = json.loads(os.environ.get("ATTENTION_MODELS") or "{}")
        print(json.dumps({**named, **short_form(sys.argv[1])}))
    except ValueError as error:
        sys.exit(f"serve: {error}")
