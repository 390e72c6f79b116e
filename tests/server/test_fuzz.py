"""Schemathesis against the service's own /openapi.json with every one of its checks (none chosen, none
excluded): no 5xx; documented statuses, content types, headers and schemas; bodies the document refuses are
refused and bodies it allows are accepted, save for the rules JSON Schema cannot state (schemathesis.toml),
which hooks.py holds to exactly those; with API keys on, no operation answers without one. Bounded in time;
FUZZ_EXAMPLES sets the examples per operation (default 200), FUZZ_SEED replays a run's seed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from schemathesis.config import SchemathesisWarning

from devtools.paths import ROOT
from tests.support.http import API_KEY

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent / "schemathesis"


def run_schemathesis(url: str, examples: str, *options: str) -> str:
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "--config-file",
        str(HERE / "schemathesis.toml"),
        "run",
        f"{url}/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        examples,
        "--phases",
        "examples,coverage,fuzzing",
        "--request-timeout",
        "30",
        "--no-color",
        *options,
    ]
    if seed := os.environ.get("FUZZ_SEED"):  # to replay a run: its summary prints its seed
        command += ["--seed", seed]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.server.schemathesis.hooks", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=900, check=False, cwd=ROOT, env=env
    )
    summary = result.stdout[-20000:]
    assert result.returncode == 0, summary
    # no warning either: one would be, e.g., an operation that "mostly rejected generated data" (its schema
    # looser than the service), as the protocol's infer did before its schema said its datatypes and shapes
    assert "generated" in summary and "No issues found" in summary and "WARNINGS" not in summary, summary
    return summary


def test_schemathesis_with_every_check_finds_nothing(server):
    print(run_schemathesis(server.url, os.environ.get("FUZZ_EXAMPLES", "200"))[-600:])


def test_schemathesis_with_api_keys_on_finds_nothing(guarded):
    """The document declares the key when keys are set: every check, the key sent (ignored_auth then checks
    that the operations refuse requests without it or with a wrong one)."""
    examples = os.environ.get("FUZZ_EXAMPLES_KEYED", "30")
    # the warnings shown by default but validation_mismatch: at 30 examples, a phase may see none of an infer
    # operation's few valid bodies computed (hooks.py), and schemathesis then warns of a mismatch; the run
    # above, at 200 examples, holds the document to that
    hidden = {"validation_mismatch", "low_valid_rate"}  # the second is off unless asked for
    shown = ",".join(sorted(warning.value for warning in list(SchemathesisWarning) if warning not in hidden))
    key = f"X-API-Key: {API_KEY}"
    print(run_schemathesis(guarded.url, examples, "--header", key, "--warnings", shown)[-600:])
