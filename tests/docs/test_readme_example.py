"""The README's first example prints what the service answers: its curl body, sent to a real server, gives the
weights, output and scale that the README shows."""

from __future__ import annotations

import json
import re

from devtools.paths import ROOT


def compact(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


def test_the_readme_example_output_is_the_service_answer(server):
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Try it") :]
    sent = re.search(r"-d '(\{.*?\})'", section, re.S)
    shown = re.search(r"```json\n(.*?)```", section, re.S)
    assert sent and shown, "README: no curl example with its output under 'Try it'"
    answer = server.post(json.loads(sent.group(1)))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    printed = shown.group(1)
    assert f'"weights":{compact(body["weights"])}' in printed
    assert f'"output":{compact(body["output"])}' in printed
    assert f'"scale":{compact(body["meta"]["scale"])}' in printed
    assert f'"axes":{compact(body["meta"]["axes"])}' in printed
