"""The server process speaks HTTP only: importing its application must not import torch."""

from __future__ import annotations

import subprocess
import sys

from devtools.paths import ROOT


def test_the_server_process_does_not_import_torch():
    probe = "import sys, service.server.app; print('torch' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "False", result.stdout
