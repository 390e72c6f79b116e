"""Fixtures shared by both tiers: tests/compute/ (the pipeline in this process) and tests/server/ (real
HTTP)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.models import save_tiny_bert


@pytest.fixture(scope="session")
def tiny_bert_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised 2-layer BERT (d_model 32, 4 heads) saved as safetensors, MiniLM's tokenizer."""
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))
