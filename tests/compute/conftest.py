"""The pipeline in this process (tests/support/compute.py): what a compute process answers, without HTTP."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.compute import LIMITED_ENV, InProcess


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
