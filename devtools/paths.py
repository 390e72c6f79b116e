"""Where things are: the repository, and the worked examples shared beside this checkout."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_GOLDEN = ROOT.parent / "shared" / "golden"
