"""The pipeline in this process (tests/support/compute.py): what a compute process answers, without HTTP."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.compute import LIMITED_ENV, InProcess
from tests.support.families import FAMILY_TYPES, FLOAT64_EXACT, save_family_model


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
def family_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("families")
    return {t: save_family_model(t, root / t) for t in FAMILY_TYPES}


@pytest.fixture(scope="session")
def families(family_folders: dict[str, Path]) -> InProcess:
    """Every family by its model_type, and float64 copies ("<type>-f64") of those whose eager reference is
    float64 throughout, as ATTENTION_MODELS names them."""
    models: dict[str, Any] = {t: str(folder) for t, folder in family_folders.items()}
    models |= {f"{t}-f64": {"path": str(family_folders[t]), "dtype": "float64"} for t in FLOAT64_EXACT}
    return InProcess.from_env({"ATTENTION_MODELS": json.dumps(models), "ATTENTION_LOAD_MODELS": "lazy"})
