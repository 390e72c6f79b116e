"""Schemathesis against the service's own /openapi.json, bounded in time: no 5xx, and every answer has a
documented status, content type and schema. FUZZ_EXAMPLES sets the examples per operation (default 200)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

CHECKS = "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance"


def test_schemathesis_finds_no_server_error_or_schema_violation(server):
    schemathesis = Path(sys.executable).with_name("schemathesis")
    command = [
        str(schemathesis),
        "run",
        f"{server.url}/openapi.json",
        "--checks",
        CHECKS,
        "--max-examples",
        os.environ.get("FUZZ_EXAMPLES", "200"),
        "--phases",
        "examples,coverage,fuzzing",
        "--request-timeout",
        "30",
        "--no-color",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    summary = result.stdout[-4000:]
    assert result.returncode == 0, summary
    assert "generated" in summary and "No issues found" in summary, summary
    print(summary[-600:])
