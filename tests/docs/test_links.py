"""The guides hold together: every relative link of README.md, docs/*.md and client/README.md reaches a file
of the repository (and a heading of it, when it names one), and every file path they write in backticks
exists, so that a file moved or renamed cannot leave its documentation pointing at nothing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from devtools.paths import ROOT

GUIDES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "client" / "README.md"]
LINK = re.compile(r"\]\(([^)\s]+)\)")
# a path in backticks: folders and a file name with one of the repository's extensions
PATH = re.compile(r"`((?:\.\./)?[\w.-]+(?:/[\w.-]+)+\.(?:py|sh|md|yaml|yml|toml|json|conf|js|css|html))`")
# the architecture guide names the files under service/ from there (`compute/pipeline.py`)
PATH_BASES = (ROOT, ROOT / "service", ROOT / "service" / "compute", ROOT / "service" / "server")


def anchors(markdown: Path) -> set[str]:
    """GitHub's anchors of a file's headings: lower case, punctuation dropped, spaces as hyphens."""
    headings = re.findall(r"^#+ (.+)$", markdown.read_text(), re.M)
    return {re.sub(r"[^\w -]", "", heading.lower()).replace(" ", "-") for heading in headings}


@pytest.mark.parametrize("guide", GUIDES, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_relative_link_reaches_a_file_and_heading(guide: Path):
    for target in LINK.findall(guide.read_text()):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        linked = (guide.parent / path).resolve() if path else guide
        assert linked.exists(), f"{guide.relative_to(ROOT)} links to {target}: no such file"
        if anchor:
            assert anchor in anchors(linked), f"{guide.relative_to(ROOT)} links to {target}: no such heading"


@pytest.mark.parametrize("guide", GUIDES, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_file_path_written_exists(guide: Path):
    for written in PATH.findall(guide.read_text()):
        if written.startswith("../"):  # beside the checkout (../shared): not the repository's
            continue
        assert any((base / written).exists() for base in PATH_BASES), (
            f"{guide.relative_to(ROOT)} names `{written}`, which is not in the repository"
        )
