"""The pipeline in this process (tests/support/compute.py): what a compute process answers, without HTTP."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.compute import LIMITED_ENV, InProcess
from tests.support.families import FAMILY_TYPES
from tests.support.lm_families import save_lm_model


@pytest.fixture(scope="session")
def compute() -> InProcess:
    """The default settings and models (MiniLM loads on first use, once)."""
    return InProcess.from_env({})


@pytest.fixture(scope="session")
def limited_compute() -> InProcess:
    """Tight limits (LIMITED_ENV), to reach every 413 with small requests."""
    return InProcess.from_env(LIMITED_ENV)


@pytest.fixture(scope="session")
def tiny_compute(tiny_bert_folder: Path) -> InProcess:
    """The tiny BERT added through the operator's settings path (ATTENTION_MODELS), and a batch limit of 4."""
    return InProcess.from_env(
        {"ATTENTION_MODELS": json.dumps({"tiny-bert": str(tiny_bert_folder)}), "ATTENTION_MAX_BATCH": "4"}
    )


@pytest.fixture(scope="session")
def lm_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every family saved with its language-model head (tests/support/lm_families.py)."""
    root = tmp_path_factory.mktemp("lm-families")
    return {t: save_lm_model(t, root / t) for t in FAMILY_TYPES}


@pytest.fixture(scope="session")
def lm_compute(lm_folders: dict[str, Path]) -> InProcess:
    """Those models by their model_type, as ATTENTION_MODELS names them."""
    models = {t: str(folder) for t, folder in lm_folders.items()}
    return InProcess.from_env({"ATTENTION_MODELS": json.dumps(models), "ATTENTION_LOAD_MODELS": "lazy"})
