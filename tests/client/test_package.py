"""The client installs on its own: a wheel of client/ alone that needs httpx and numpy only, and an import
that loads nothing of the service (no torch, pydantic, FastAPI)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from devtools.paths import ROOT

SERVICE_SIDE = ("torch", "transformers", "pydantic", "fastapi", "service", "schemas")


def test_importing_and_using_the_client_loads_nothing_of_the_service(tmp_path: Path):
    script = (
        "import sys, attention_client\n"
        "from attention_client.decode import from_json\n"
        'body = b\'{"weights": [[[[1.0, null]]]], "meta": {"axes": {"weights": '
        '["batch", "head", "query_pos", "key_pos"]}, "shapes": {"weights": [1, 1, 1, 2]}}}\'\n'
        "print(from_json(body, None).weights.tolist(), flush=True)\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {SERVICE_SIDE!r}))\n"
    )
    found = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=True
    )
    assert found.stdout.splitlines() == ["[[[[1.0, -inf]]]]", "[]"]


@pytest.mark.slow
def test_the_wheel_holds_the_package_and_needs_httpx_and_numpy_only(tmp_path: Path):
    source = tmp_path / "client"  # a copy: setuptools builds in the source folder (build/, *.egg-info)
    shutil.copytree(
        ROOT / "client", source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(source),
        ],
        check=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("attention_client-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")} == {
        "attention_client"
    }
    assert "attention_client/py.typed" in names  # the types reach the user's mypy
    requires = sorted(
        line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist:")
    )
    assert requires == ["httpx>=0.27", "numpy>=1.26"]
