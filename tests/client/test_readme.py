"""The Python examples of this client in README.md and client/README.md run against the service and print what
the text block after each one shows (README.md's others, e.g. tritonclient's, are not this client's)."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

from attention_client import API_KEY_ENV
from devtools.paths import ROOT
from devtools.servers import Server
from tests.support.http import API_KEY

DOCUMENTED_URL = "http://127.0.0.1:8000"
# a python block, and the text block right after it (its output) if there is one
EXAMPLE = re.compile(r"```python\n(?P<code>.*?)```\s*(?:```text\n(?P<output>.*?)```)?", re.DOTALL)


def examples(readme: Path) -> list[tuple[str, str | None]]:
    found = EXAMPLE.finditer(readme.read_text())
    return [(each["code"], each["output"]) for each in found if "attention_client" in each["code"]]


@pytest.mark.parametrize("readme", ["README.md", "client/README.md"])
def test_the_examples_run_and_print_what_is_shown(readme, service: Server, monkeypatch):
    monkeypatch.setenv(API_KEY_ENV, API_KEY)  # the examples send no key: the service's is in the environment
    found = examples(ROOT / readme)
    assert any(output is not None for _, output in found), f"{readme} shows no example output"
    for code, output in found:
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(compile(code.replace(DOCUMENTED_URL, service.url), readme, "exec"), {"__name__": "__main__"})
        if output is not None:
            assert printed.getvalue() == output, code
