"""The README's "Two commands" section names every environment variable that scripts/serve.sh and the
scripts/install.sh it runs read."""

from __future__ import annotations

import re

from devtools.paths import ROOT

SCRIPTS = ROOT / "scripts"


def test_every_variable_of_serve_and_install_is_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Two commands") : readme.index("## Try it")]
    for script in ("serve.sh", "install.sh"):
        variables = set(re.findall(r"\$\{([A-Z_]+):-", (SCRIPTS / script).read_text()))
        assert variables, script
        for variable in variables:
            assert f"`{variable}" in section, f"README's Two commands do not name {variable} of {script}"
