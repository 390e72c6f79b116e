"""Where things are: the repository, and the project's shared folder beside this checkout."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"  # the wire contract and the worked examples (golden/), beside every checkout


def shared(*parts: str) -> Path:
    """A path under ../shared. CI always has ../shared, so a missing one fails the test that needs it, with
    where it was looked for; it is never a skip."""
    import pytest  # here: bench/ and scripts/ read ROOT from this module without pytest

    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.fail(
            f"{path} is missing: these tests need the project's shared folder beside the checkout ({SHARED})",
            pytrace=False,
        )
    return path
